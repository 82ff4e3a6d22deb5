"""The KV memory study (``experiment=kv_memory``, knobs ``mem.*``): how much of the reserved KV memory holds
tokens under contiguous reservation (maximum length, power of two, oracle) and paged blocks, over a trace."""

from __future__ import annotations

from experiments.framework.spec import Experiment, Report
from experiments.kv_memory import measure
from experiments.kv_memory.schema import KEY, MemConfig


def _report() -> Report:
    from experiments.kv_memory import figures

    return figures.REPORT


EXPERIMENT = Experiment(name="kv_memory", key=KEY, schema=MemConfig, columns=measure.COLUMNS, run=measure.run,
                        report=_report, summary=measure.summary)
