"""The model a point runs, for every experiment that runs one (engine, serve, quality): its knobs, written once, and
its file: ``<key>.file`` or a real model (as it is, or requantized into ``<key>.weights``), or a model made from its
shape, weights and seed; made and requantized files are cached in ``<key>.models_dir`` (written once, with a progress
bar for large files)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

from experiments.framework.bench import point_threads
from experiments.framework.progress import bar
from experiments.framework.spec import ConfigError, Knobs, knob, require, require_plain_name
from experiments.shared.packaged import PACKAGED, ModelFetchError, packaged_file
from infer_core.measure.environment import usable_cpus
from infer_core.model import PRESETS, WEIGHT_TYPES, ModelShape
from infer_core.model.gguf_io import Progress, StoredTensor, read_gguf
from infer_core.model.store import cached_gguf, cached_requantized

log = logging.getLogger(__name__)
logging.getLogger("gguf.gguf_writer").setLevel(logging.WARNING)  # it announces every file it writes
Weights = Enum("Weights", {name: name for name in ("source", *WEIGHT_TYPES)})
#: Files smaller than this are written without announcement or progress bar.
PROGRESS_BYTES = 100 * 2**20


MODEL_MEANING = ("a real model fetched once (`smollm2-135m-instruct`), a shape preset made with random weights "
                 "(`tiny`, `tiny-qwen2`, `tinyllama-1.1b`, `qwen2.5-0.5b`, `llama-2-7b`, `llama-3-8b`), or the name "
                 "of the shape given in `shape`")


@dataclass
class ModelKnobs(Knobs):
    """The model knobs of an experiment that runs a model (a subclass sets ``key``, its knobs' prefix)."""

    key: ClassVar[str] = ""
    model: str = knob("tiny", MODEL_MEANING)
    shape: dict[str, Any] = knob({}, "a shape of your own, named by `model`: arch, d_model, n_layers, n_heads, "
                                     "n_kv_heads, d_ffn, n_vocab (and optionally tied_embeddings, rope_theta, "
                                     "norm_eps, context); empty: `model` is a preset")
    weights: Weights | None = knob(None, "llama-quantize's file type of the matrices, with its per-tensor recipe: "
                                         f"{' '.join(f'`{w}`' for w in WEIGHT_TYPES)}; a real model or a file is "
                                         "requantized from its own weights; `source`: a real model or a file as it "
                                         "is; null: `source` for those, `q8_0` for a made model")
    pure: bool = knob(False, "every matrix in the file type's base type, as llama-quantize --pure (rows that are not "
                             "whole blocks still fall back)")
    file: str | None = knob(None, "run this GGUF file instead of a made model", path=True)
    threads: int | None = knob(None, "llama.cpp's threads (BLAS's for the NumPy engine); null: the point's thread "
                                     "count (bench.threads, or the job's share of the cores)")
    models_dir: str = knob("outputs/models", "where made and requantized model files are cached (by shape, weights "
                                             "and seed; by source file and weights)", path=True)

    def check_model(self) -> None:
        """The model knobs' rules: threads within the CPUs, a known or well-formed shape (when no file), ``weights``
        resolved (null: ``source`` for a real model or a file, ``q8_0`` for a made one)."""
        if self.weights is None:
            self.weights = Weights.q8_0 if self.made else Weights.source
        require(not (self.made and self.weights is Weights.source),
                f"{self.key}.weights=source runs a real model or a file as it is; {self.key}.model={self.model} is "
                f"made here from random weights: choose a file type (f32 keeps them unquantized)")
        cpus = usable_cpus()
        require(self.threads is None or 1 <= self.threads <= cpus,
                f"{self.key}.threads={self.threads} must be between 1 and {cpus}, the CPUs this process may use, or "
                "null")
        if self.file is None:
            self.model_shape  # noqa: B018 (an unknown shape is refused here, before anything runs)

    @property
    def model_shape(self) -> ModelShape:
        """The shape of the model: a packaged model's, else ``shape`` if given, else the preset ``model``."""
        if self.packaged:
            return PACKAGED[self.model].shape
        return shape_of(self.key, self.model, self.shape)

    @property
    def packaged(self) -> bool:
        """A real model a registry package ships (``smollm2-135m-instruct``), not a ``file``."""
        return self.file is None and not self.shape and self.model in PACKAGED

    @property
    def made(self) -> bool:
        """A model made here from a shape and random weights (its f32 twin can be made too)."""
        return self.file is None and not self.packaged

    def model_inactive(self) -> set[str]:
        """The model knobs that do not act: ``file`` for a made or packaged model; the shape of a file or of a
        packaged model; ``pure`` and ``models_dir`` when such a model runs as it is; ``shape`` when empty."""
        as_is = {"pure", "models_dir"} if self.weights is Weights.source else set()
        if self.file is not None:
            return {"model", "shape"} | as_is
        if self.packaged:
            return {"file", "shape"} | as_is  # the shipped file lives in the shared cache (shared/packaged.py)
        return {"file"} | (set() if self.shape else {"shape"})

    @property
    def n_threads(self) -> int:
        return self.threads or point_threads()


def shape_of(key: str, model: str, shape: dict[str, Any]) -> ModelShape:
    """The shape ``{key}.shape`` describes, named ``{key}.model``, or the preset ``{key}.model``."""
    if not shape:
        require(model in PRESETS, f"{key}.model={model!r} is not a known model: choose a real one "
                                  f"({', '.join(PACKAGED)}), a shape preset ({', '.join(PRESETS)}), or describe a "
                                  f"shape in {key}.shape")
        return PRESETS[model]
    require(model not in PRESETS, f"{key}.model={model!r} names a preset: give {key}.shape another name")
    require_plain_name(f"{key}.model", model, "the model's files in the models folder")
    try:
        return ModelShape(**shape)
    except TypeError as exc:  # a missing or unknown field
        raise ConfigError(f"{key}.shape: {exc}".replace("ModelShape.__init__() ", "")) from None
    except ValueError as exc:
        raise ConfigError(f"{key}.shape.{exc}") from None


def source_file(cfg: ModelKnobs) -> tuple[Path, bool]:
    """The file or real model as it is (a real model fetched on first use); (path, reused)."""
    if cfg.file is not None:
        if not Path(cfg.file).is_file():
            raise ConfigError(f"{cfg.key}.file={cfg.file}: no such file")
        return Path(cfg.file), True
    try:
        return packaged_file(cfg.model)
    except ModelFetchError as exc:
        raise ConfigError(f"{cfg.key}.model={cfg.model}: {exc}") from None


def model_file(cfg: ModelKnobs, seed: int) -> tuple[Path, bool]:
    """The file the point runs: the file or real model as it is, requantized, or the made model (written on first
    use, with progress); (path, reused)."""
    if not cfg.made:
        path, reused = source_file(cfg)
        if cfg.weights is Weights.source:
            return path, reused
        try:
            return _cached(cfg, f"requantizing {path.name}", lambda progress: cached_requantized(
                cfg.models_dir, path, cfg.weights.value, cfg.pure, cfg.n_threads, progress))
        except ValueError as exc:  # a source that is truncated, foreign or lacks a tensor
            key = f"{cfg.key}.file" if cfg.file is not None else f"{cfg.key}.model"
            raise ConfigError(f"{key}: {exc}") from None
    return _cached(cfg, f"writing the model {cfg.model} (seed {seed})", lambda progress: cached_gguf(
        cfg.models_dir, cfg.model, cfg.model_shape, cfg.weights.value, seed, cfg.n_threads, progress, cfg.pure))


def _cached(cfg: ModelKnobs, what: str, write: Callable[[Progress], tuple[Path, bool]]) -> tuple[Path, bool]:
    """Find or write a file of ``models_dir`` with ``write``, announcing a large one and showing its progress."""
    started, shown = time.perf_counter(), []

    def progress(done: int, total: int) -> None:
        if total < PROGRESS_BYTES:
            return
        if not shown:
            log.info("%s in %s (%.2f GB) into %s, once", what, cfg.weights.value, total / 1e9,
                     cfg.models_dir)
            shown.append(bar(total, f"{what.split(' (')[0]} {cfg.weights.value}", unit="B", unit_scale=True))
        shown[0].update(done - shown[0].n)

    try:
        path, reused = write(progress)
    finally:
        for b in shown:
            b.close()
    if reused:
        log.info("reusing %s", path)
    else:
        log.info("wrote %s in %.1f s", path, time.perf_counter() - started)
    return path, reused


def read_model(path: Path, key: str) -> tuple[ModelShape, list[StoredTensor]]:
    """The file's shape and tensors; a missing, truncated or foreign file is a :class:`ConfigError`."""
    if not path.is_file():
        raise ConfigError(f"{key}.file={path}: no such file")
    try:
        return read_gguf(path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
