"""The KV-cache experiment (``experiment=kv_cache``, knobs ``kv.*``): what a KV cache buys, per strategy."""

from __future__ import annotations

from experiments.framework.spec import Experiment, Report
from experiments.kv_cache import measure
from experiments.kv_cache.schema import KEY, KVConfig


def _report() -> Report:
    from experiments.kv_cache import figures

    return figures.REPORT


EXPERIMENT = Experiment(name="kv_cache", key=KEY, schema=KVConfig, columns=measure.COLUMNS, run=measure.run,
                        report=_report, summary=measure.summary, timed=True)
