"""Knobs of the engine experiment, under ``engine.*``: each default written once, here.

The knobs of llama.cpp's context (``n_batch``, ``n_ubatch``, ``flash_attn``, ``type_k``, ``type_v``)
act only on llama.cpp (``backend=llamacpp`` or ``llama_bench``); ``model``, ``shape`` and ``weights`` only
when no ``file`` is given (:meth:`EngineConfig.inactive`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from experiments.framework.spec import knob, require, require_positive
from experiments.shared.llamacpp import CacheType
from experiments.shared.model import ModelKnobs, Weights

__all__ = ["KEY", "Backend", "CacheType", "EngineConfig", "Weights"]

KEY = "engine"
LLAMACPP_ONLY = frozenset({"n_batch", "n_ubatch", "flash_attn", "type_k", "type_v"})


class Backend(Enum):
    llamacpp = "llamacpp"  # llama.cpp through llama-cpp-python
    llama_bench = "llama_bench"  # llama.cpp's own llama-bench binary (make tools), its JSON parsed into our rows
    numpy = "numpy"  # infer_core's reference forward on the dequantized weights (float32)


@dataclass
class EngineConfig(ModelKnobs):
    """One model file run by one engine: llama-bench's prompt (pp) and generation (tg) tests, plus the
    roofline and the fidelity of its logits."""

    key: ClassVar[str] = KEY

    backend: Backend = knob(Backend.llamacpp, "`llamacpp` (llama.cpp in process), `llama_bench` (llama.cpp's own "
                                              "benchmark, `make tools`) or `numpy` (the NumPy reference forward)")
    n_batch: int = knob(2048, "llama.cpp: logical batch, tokens per llama_decode call")
    n_ubatch: int = knob(512, "llama.cpp: physical batch, tokens per compute graph")
    flash_attn: bool = knob(False, "llama.cpp: fused FlashAttention kernel")
    type_k: CacheType = knob(CacheType.f16, "llama.cpp: K cache type, `f32` `f16` `q8_0` `q4_0`")
    type_v: CacheType = knob(CacheType.f16, "llama.cpp: V cache type (quantized types need flash_attn)")
    n_prompt: int = knob(512, "pp test: prompt tokens processed in one go (0: no pp row)")
    n_gen: int = knob(128, "tg test: tokens generated one at a time (0: no tg row)")
    depth: int = knob(0, "tokens already in the KV cache before each test (llama-bench's -d)")
    n_check: int = knob(64, "tokens whose logits are compared with the reference and the f32 model")

    def __post_init__(self) -> None:
        require_positive(KEY, self, "n_batch", "n_ubatch", "n_check")
        require_positive(KEY, self, "n_prompt", "n_gen", "depth", minimum=0)
        require(self.n_prompt + self.n_gen > 0, f"{KEY}.n_prompt and {KEY}.n_gen are both 0: nothing to measure")
        self.check_model()
        require(self.n_ubatch <= self.n_batch,
                f"{KEY}.n_ubatch={self.n_ubatch} must be <= {KEY}.n_batch={self.n_batch}")
        if self.backend is not Backend.numpy and self.type_v in (CacheType.q8_0, CacheType.q4_0):
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
        return skip | frozenset(self.model_inactive())
