"""The engine experiment (``experiment=engine``, knobs ``engine.*``): GGUF models made here, run by
llama.cpp or the NumPy reference, timed as llama-bench times them, checked against the reference."""

from __future__ import annotations

from experiments.engine import measure
from experiments.engine.schema import KEY, EngineConfig
from experiments.framework.spec import Experiment, Report


def _report() -> Report:
    from experiments.engine import figures

    return figures.REPORT


EXPERIMENT = Experiment(name="engine", key=KEY, schema=EngineConfig, columns=measure.COLUMNS, run=measure.run,
                        report=_report, summary=measure.summary, groups=("shape",), isolated=True,
                        timed=True)
