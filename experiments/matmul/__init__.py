"""The matmul experiment (``experiment=matmul``, knobs ``matmul.*``, named products ``mmcase=``)."""

from __future__ import annotations

from experiments.framework.spec import Experiment, Report
from experiments.matmul import measure
from experiments.matmul.schema import KEY, MatmulConfig


def _report() -> Report:
    from experiments.matmul import figures

    return figures.REPORT


EXPERIMENT = Experiment(name="matmul", key=KEY, schema=MatmulConfig, columns=measure.COLUMNS, run=measure.run,
                        report=_report, summary=measure.summary, groups=("mmcase",), timed=True)
