"""A folder of model files: made ones written once and found again by shape, weights and seed; requantized ones by
source file, file type and recipe."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from infer_core.model.gguf_io import Progress, write_gguf
from infer_core.model.requantize import requantize_gguf
from infer_core.model.shapes import ModelShape

#: Part of every file's key: bump it when the writer's output changes (init, layout, quantizers, recipes).
WRITER_VERSION = 5


def _digest(*facts: object) -> str:
    text = json.dumps([WRITER_VERSION, *facts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def model_key(name: str, shape: ModelShape, weights: str, seed: int, pure: bool = False) -> str:
    """``<name>-<weights>[-pure]-seed<seed>-<digest>``: the digest covers the shape's every field and the
    writer's version, so a changed shape under an old name gets a new file."""
    return f"{name}-{weights}{'-pure' if pure else ''}-seed{seed}-{_digest(dataclasses.asdict(shape))}"


def cached_gguf(folder: str | Path, name: str, shape: ModelShape, weights: str, seed: int, threads: int = 1,
                progress: Progress | None = None, pure: bool = False) -> tuple[Path, bool]:
    """The file of this model in ``folder``, written if missing; returns (path, reused).

    Files are written atomically (under a temporary name, then renamed), so a file that exists is
    complete: an interrupted write leaves nothing under the final name.
    """
    path = Path(folder) / f"{model_key(name, shape, weights, seed, pure)}.gguf"
    if path.is_file():
        return path, True
    return write_gguf(path, shape, weights, seed, threads=threads, progress=progress, pure=pure), False


def cached_requantized(folder: str | Path, source: str | Path, weights: str, pure: bool = False, threads: int = 1,
                       progress: Progress | None = None) -> tuple[Path, bool]:
    """``source`` requantized into ``weights`` in ``folder`` (``<source stem>-<weights>[-pure]-<digest>.gguf``, the
    digest of the source's path, size and modification time), written if missing; returns (path, reused)."""
    source = Path(source).resolve()
    stat = source.stat()
    key = _digest(str(source), stat.st_size, stat.st_mtime_ns)
    path = Path(folder) / f"{source.stem}-{weights}{'-pure' if pure else ''}-{key}.gguf"
    if path.is_file():
        return path, True
    return requantize_gguf(source, path, weights, pure, threads, progress), False
