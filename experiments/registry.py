"""Every experiment this app runs and reports: adding one is a folder, its YAML and one line here."""

from __future__ import annotations

from experiments import (
    attention,
    batching,
    engine,
    kv_cache,
    kv_memory,
    machine,
    matmul,
    quality,
    quantization,
    serve,
)
from experiments.framework.spec import Experiment

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e for e in (kv_cache.EXPERIMENT, quantization.EXPERIMENT, matmul.EXPERIMENT, machine.EXPERIMENT,
                        engine.EXPERIMENT, serve.EXPERIMENT, attention.EXPERIMENT, kv_memory.EXPERIMENT,
                        batching.EXPERIMENT, quality.EXPERIMENT)
}
