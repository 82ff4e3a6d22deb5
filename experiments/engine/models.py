"""The model file a point runs: ``engine.file``, or a model made from its shape, weights and seed and
cached in ``engine.models_dir`` (written once, with a progress bar for large files). The serve
experiment's embedded server runs its model the same way, from its own ``serve.*`` knobs."""

from __future__ import annotations

import logging
import time
from enum import Enum
from pathlib import Path
from typing import Protocol

from experiments.engine.schema import KEY
from experiments.framework.progress import bar
from experiments.framework.spec import ConfigError
from infer_core.model import ModelShape
from infer_core.model.gguf_io import StoredTensor, read_gguf
from infer_core.model.store import cached_gguf

log = logging.getLogger(__name__)
logging.getLogger("gguf.gguf_writer").setLevel(logging.WARNING)  # it announces every file it writes
#: Files smaller than this are written without announcement or progress bar.
PROGRESS_BYTES = 100 * 2**20


class ModelKnobs(Protocol):
    """The knobs that name a model: a file, or a shape, weights and a cache folder."""

    file: str | None
    model: str
    weights: Enum
    models_dir: str

    @property
    def model_shape(self) -> ModelShape: ...

    @property
    def n_threads(self) -> int: ...


def model_file(cfg: ModelKnobs, seed: int) -> tuple[Path, bool]:
    """The file the point runs: ``engine.file``, or the made model (written on first use, with progress)."""
    if cfg.file is not None:
        return Path(cfg.file), True
    shape = cfg.model_shape
    started, shown = time.perf_counter(), []

    def progress(done: int, total: int) -> None:
        if total < PROGRESS_BYTES:
            return
        if not shown:
            log.info("writing the model %s in %s (%.2f GB, seed %d) into %s: a minute or more, once", cfg.model,
                     cfg.weights.value, total / 1e9, seed, cfg.models_dir)
            shown.append(bar(total, f"writing {cfg.model} {cfg.weights.value}", unit="B", unit_scale=True))
        shown[0].update(done - shown[0].n)

    try:
        path, reused = cached_gguf(cfg.models_dir, cfg.model, shape, cfg.weights.value, seed, cfg.n_threads,
                                   progress)
    finally:
        for b in shown:
            b.close()
    if reused:
        log.info("reusing %s", path)
    else:
        log.info("wrote %s in %.1f s", path, time.perf_counter() - started)
    return path, reused


def read_model(path: Path, key: str = KEY) -> tuple[ModelShape, list[StoredTensor]]:
    """The file's shape and tensors; a missing, truncated or foreign file is a :class:`ConfigError`."""
    if not path.is_file():
        raise ConfigError(f"{key}.file={path}: no such file")
    try:
        return read_gguf(path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
