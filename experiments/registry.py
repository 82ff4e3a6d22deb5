"""Every experiment, by name: the runner and the report dispatch through here only."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from experiments import kv_cache, machine, matmul, quantization
from experiments.base import BenchConfig, ConfigError, Experiment, SweepConfig

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e for e in (kv_cache.EXPERIMENT, quantization.EXPERIMENT, matmul.EXPERIMENT, machine.EXPERIMENT)
}


def get(name: object) -> Experiment:
    """The experiment called ``name``; a :class:`ConfigError` listing the known ones otherwise."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"experiment={name} is unknown: choose one of {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def store_schemas() -> None:
    """Register the schemas so YAML files can extend them (``/schema/bench``, ``/schema/kv``)."""
    cs = ConfigStore.instance()
    cs.store(group="schema", name="bench", node=BenchConfig)
    cs.store(group="schema", name="sweep_settings", node=SweepConfig)
    for exp in EXPERIMENTS.values():
        cs.store(group="schema", name=exp.key, node=exp.schema)
