"""The batching experiment (``experiment=batching``, knobs ``batch.*``): a request trace served by an engine loop
over a paged KV cache, static against continuous batching, preemption by recompute or swap, measured or on a
fitted cost model."""

from __future__ import annotations

from experiments.batching import measure
from experiments.batching.schema import KEY, BatchConfig
from experiments.framework.spec import Experiment, Report


def _report() -> Report:
    from experiments.batching import figures

    return figures.REPORT


EXPERIMENT = Experiment(name="batching", key=KEY, schema=BatchConfig, columns=measure.COLUMNS, run=measure.run,
                        report=_report, summary=measure.summary)
