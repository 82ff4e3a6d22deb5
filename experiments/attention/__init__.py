"""The attention experiment (``experiment=attention``, knobs ``attn.*``): the dense form against
FlashAttention's tiles and flash-decoding's splits: time, peak memory, slow-memory traffic, error."""

from __future__ import annotations

from experiments.attention import measure
from experiments.attention.schema import KEY, AttnConfig
from experiments.framework.spec import Experiment, Report


def _report() -> Report:
    from experiments.attention import figures

    return figures.REPORT


EXPERIMENT = Experiment(name="attention", key=KEY, schema=AttnConfig, columns=measure.COLUMNS, run=measure.run,
                        report=_report, summary=measure.summary, timed=True)
