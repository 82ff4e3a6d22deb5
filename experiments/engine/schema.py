"""Knobs of the engine experiment, under ``engine.*``: each default written once, here.

The knobs of llama.cpp's context (``n_batch``, ``n_ubatch``, ``flash_attn``, ``type_k``, ``type_v``)
act only on ``backend=llamacpp``; ``model``, ``shape`` and ``weights`` only when no ``file`` is
given (:meth:`EngineConfig.inactive`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from experiments.framework.bench import point_threads
from experiments.framework.spec import ConfigError, Knobs, knob, require, require_plain_name, require_positive
from infer_core.environment import usable_cpus
from infer_core.model import PRESETS, WEIGHT_TYPES, ModelShape

KEY = "engine"
Weights = Enum("Weights", {name: name for name in WEIGHT_TYPES})
LLAMACPP_ONLY = frozenset({"n_batch", "n_ubatch", "flash_attn", "type_k", "type_v"})
MADE_MODEL = frozenset({"model", "shape", "weights"})


class Backend(Enum):
    llamacpp = "llamacpp"  # llama.cpp through llama-cpp-python
    numpy = "numpy"  # infer_core's reference forward on the dequantized weights (float32)


class CacheType(Enum):
    """Element type of llama.cpp's K or V cache."""

    f32 = "f32"
    f16 = "f16"
    q8_0 = "q8_0"
    q4_0 = "q4_0"


@dataclass
class EngineConfig(Knobs):
    """One model file run by one engine: llama-bench's prompt (pp) and generation (tg) tests, plus the
    roofline and the fidelity of its logits."""

    backend: Backend = knob(Backend.llamacpp, "`llamacpp` (llama.cpp) or `numpy` (the NumPy reference forward)")
    model: str = knob("tiny", "a shape preset (`tiny`, `tiny-qwen2`, `tinyllama-1.1b`, `qwen2.5-0.5b`, "
                              "`llama-2-7b`), or the name of the shape given in `engine.shape`")
    shape: dict[str, Any] = knob({}, "a shape of your own, named `engine.model`: arch, d_model, n_layers, n_heads, "
                                     "n_kv_heads, d_ffn, n_vocab (and optionally tied_embeddings, rope_theta, "
                                     "norm_eps, context); empty: `engine.model` is a preset")
    weights: Weights = knob(Weights.q8_0, "storage of the matrices: `f32` `f16` `q8_0` `q4_0` `q4_1` `q5_0` "
                                          "`q5_1` `q2_k` `q3_k` `q4_k` `q5_k` `q6_k`, mixes `q4_k_m` `q5_k_m`")
    file: str | None = knob(None, "run this GGUF file instead of a made model (no f32 model to compare with: "
                                  "the KL columns stay empty)", path=True)
    threads: int | None = knob(None, "threads of the engine (llama.cpp's, or BLAS's for numpy); null: the point's "
                                     "thread count (bench.threads, or the job's share of the cores)")
    n_batch: int = knob(2048, "llama.cpp: logical batch, tokens per llama_decode call")
    n_ubatch: int = knob(512, "llama.cpp: physical batch, tokens per compute graph")
    flash_attn: bool = knob(False, "llama.cpp: fused FlashAttention kernel")
    type_k: CacheType = knob(CacheType.f16, "llama.cpp: K cache type, `f32` `f16` `q8_0` `q4_0`")
    type_v: CacheType = knob(CacheType.f16, "llama.cpp: V cache type (quantized types need flash_attn)")
    n_prompt: int = knob(512, "pp test: prompt tokens processed in one go (0: no pp row)")
    n_gen: int = knob(128, "tg test: tokens generated one at a time (0: no tg row)")
    depth: int = knob(0, "tokens already in the KV cache before each test (llama-bench's -d)")
    n_check: int = knob(64, "tokens whose logits are compared with the reference and the f32 model")
    models_dir: str = knob("outputs/models", "where made model files are cached, by shape, weights and seed",
                           path=True)

    def __post_init__(self) -> None:
        require_positive(KEY, self, "n_batch", "n_ubatch", "n_check")
        require_positive(KEY, self, "n_prompt", "n_gen", "depth", minimum=0)
        require(self.n_prompt + self.n_gen > 0, f"{KEY}.n_prompt and {KEY}.n_gen are both 0: nothing to measure")
        cpus = usable_cpus()
        require(self.threads is None or 1 <= self.threads <= cpus,
                f"{KEY}.threads={self.threads} must be between 1 and {cpus}, the CPUs this process may use, or null")
        require(self.n_ubatch <= self.n_batch,
                f"{KEY}.n_ubatch={self.n_ubatch} must be <= {KEY}.n_batch={self.n_batch}")
        if self.backend is Backend.llamacpp and self.type_v in (CacheType.q8_0, CacheType.q4_0):
            require(self.flash_attn, f"{KEY}.type_v={self.type_v.value} needs {KEY}.flash_attn=true: llama.cpp "
                                     "quantizes the V cache only with flash attention")
        if self.file is None:
            context = self.model_shape.context
            need = self.depth + self.n_prompt + self.n_gen
            require(need <= context, f"{KEY}.depth + {KEY}.n_prompt + {KEY}.n_gen = {need} exceeds the context of "
                                     f"{KEY}.model={self.model} ({context} tokens)")
            require(self.n_check <= context, f"{KEY}.n_check={self.n_check} exceeds the context of "
                                             f"{KEY}.model={self.model} ({context} tokens)")

    def inactive(self) -> frozenset[str]:
        skip = LLAMACPP_ONLY if self.backend is Backend.numpy else frozenset()
        made = frozenset({"file"}) if self.file is None else MADE_MODEL
        return skip | made | (frozenset() if self.shape else frozenset({"shape"}))

    @property
    def model_shape(self) -> ModelShape:
        """The shape of the made model: ``engine.shape`` if given, else the preset ``engine.model``."""
        return shape_of(KEY, self.model, self.shape)

    @property
    def n_threads(self) -> int:
        """llama.cpp's threads: this knob's, else the point's thread count (``bench.threads``)."""
        return self.threads or point_threads()


def shape_of(key: str, model: str, shape: dict[str, Any]) -> ModelShape:
    """The shape ``{key}.shape`` describes, named ``{key}.model``, or the preset ``{key}.model``."""
    if not shape:
        require(model in PRESETS, f"{key}.model={model!r} is not a known shape: choose one of "
                                  f"{', '.join(PRESETS)}, or describe it in {key}.shape")
        return PRESETS[model]
    require(model not in PRESETS, f"{key}.model={model!r} names a preset: give {key}.shape another name")
    require_plain_name(f"{key}.model", model, "the model's files in the models folder")
    try:
        return ModelShape(**shape)
    except TypeError as exc:  # a missing or unknown field
        raise ConfigError(f"{key}.shape: {exc}".replace("ModelShape.__init__() ", "")) from None
    except ValueError as exc:
        raise ConfigError(f"{key}.shape.{exc}") from None
