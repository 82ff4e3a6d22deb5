"""Serving requests: a paged KV cache (``paged.py``), the engine loop with static or continuous batching
(``scheduler.py``), what an iteration costs (``executors.py``), request traces (``traces.py``) and KV memory
under each allocation policy (``kv_memory.py``)."""
