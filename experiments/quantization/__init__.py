"""The quantization experiment (``experiment=quantization``, knobs ``quant.*``, named methods ``qmethod=``)."""

from __future__ import annotations

from experiments.framework.spec import Experiment, Report
from experiments.quantization import measure
from experiments.quantization.schema import KEY, QuantConfig


def _report() -> Report:
    from experiments.quantization import figures

    return figures.REPORT


EXPERIMENT = Experiment(name="quantization", key=KEY, schema=QuantConfig, columns=measure.COLUMNS, run=measure.run,
                        report=_report, summary=measure.summary, groups=("qmethod",), timed=True)
