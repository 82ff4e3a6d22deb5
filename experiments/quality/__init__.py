"""The quality experiment (``experiment=quality``, knobs ``quality.*``): a model file on real text, scored as
llama-perplexity scores it, against the same file with an f16 KV cache."""

from __future__ import annotations

from experiments.framework.spec import Experiment, Report
from experiments.quality import measure
from experiments.quality.schema import KEY, QualityConfig


def _report() -> Report:
    from experiments.quality import figures

    return figures.REPORT


EXPERIMENT = Experiment(name="quality", key=KEY, schema=QualityConfig, columns=measure.COLUMNS, run=measure.run,
                        report=_report, summary=measure.summary, isolated=True)
