"""The machine experiment (``experiment=machine``, knobs ``machine.*``): measure this machine's roofs again."""

from __future__ import annotations

from experiments.framework.spec import Experiment, Report
from experiments.machine import measure
from experiments.machine.schema import KEY, MachineConfig


def _report() -> Report:
    from experiments.machine import figures

    return figures.REPORT


EXPERIMENT = Experiment(name="machine", key=KEY, schema=MachineConfig, columns=measure.COLUMNS, run=measure.run,
                        report=_report, summary=measure.summary)
