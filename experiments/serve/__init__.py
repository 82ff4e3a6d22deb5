"""The serve experiment (``experiment=serve``, knobs ``serve.*``): streamed requests against a real server
(llama.cpp's, started here, or any at ``serve.url``), and the latency and throughput it gives as the load grows."""

from __future__ import annotations

from experiments.framework.spec import Experiment, Report
from experiments.serve import measure
from experiments.serve.schema import KEY, ServeConfig


def _report() -> Report:
    from experiments.serve import figures

    return figures.REPORT


EXPERIMENT = Experiment(name="serve", key=KEY, schema=ServeConfig, columns=measure.COLUMNS, run=measure.run,
                        report=_report, summary=measure.summary, isolated=True)
