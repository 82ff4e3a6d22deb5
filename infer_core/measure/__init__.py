"""Measuring honestly: the timing harness (``timing.py``), the machine's peaks and bandwidth (``machine.py``),
the environment of every row (``environment.py``), memory (``memory.py``) and atomic files (``files.py``)."""
