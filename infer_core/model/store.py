"""A folder of model files made from seeds: written once, found again by shape, weights and seed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from infer_core.model.gguf_io import Progress, write_gguf
from infer_core.model.shapes import ModelShape

#: Part of every file's key: bump it when the writer's output changes (init, layout, quantizers).
WRITER_VERSION = 4


def model_key(name: str, shape: ModelShape, weights: str, seed: int) -> str:
    """``<name>-<weights>-seed<seed>-<digest>``: the digest covers the shape's every field and the
    writer's version, so a changed shape under an old name gets a new file."""
    facts = json.dumps([WRITER_VERSION, dataclasses.asdict(shape)], sort_keys=True)
    return f"{name}-{weights}-seed{seed}-{hashlib.sha256(facts.encode()).hexdigest()[:10]}"


def cached_gguf(folder: str | Path, name: str, shape: ModelShape, weights: str, seed: int, threads: int = 1,
                progress: Progress | None = None) -> tuple[Path, bool]:
    """The file of this model in ``folder``, written if missing; returns (path, reused).

    Files are written atomically (under a temporary name, then renamed), so a file that exists is
    complete: an interrupted write leaves nothing under the final name.
    """
    path = Path(folder) / f"{model_key(name, shape, weights, seed)}.gguf"
    if path.is_file():
        return path, True
    return write_gguf(path, shape, weights, seed, threads=threads, progress=progress), False
