"""Knobs of the quality experiment, under ``quality.*``: each default written once, here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from experiments.framework.spec import knob, require, require_positive
from experiments.shared.llamacpp import CacheType
from experiments.shared.model import MODEL_MEANING, ModelKnobs

KEY = "quality"


@dataclass
class QualityConfig(ModelKnobs):
    """Quality of a choice of weights (a real model requantized, or as it is), KV-cache types and flash attention on
    real text, as llama-perplexity measures it against the model as it is with an f16 KV cache: perplexity, KL
    divergence, Δp and same top token, overall and by position in the context; with the choice's pp and tg speed."""

    key: ClassVar[str] = KEY
    model: str = knob("smollm2-135m-instruct", MODEL_MEANING)
    text: str = knob("pydoc", "the text scored: `pydoc` (CPython's pydoc topics, joined in sorted order) or the path "
                              "of a UTF-8 text file (wikitext-2's test split, say)")
    n_ctx: int = knob(512, "tokens per chunk (llama-perplexity's -c); PPL and KLD score the second half of each")
    n_tokens: int = knob(2048, "tokens of the text evaluated: its first n_tokens // n_ctx whole chunks")
    type_k: CacheType = knob(CacheType.f16, "K cache type: `f32`, `f16`, `q8_0` or `q4_0` (the base keeps f16)")
    type_v: CacheType = knob(CacheType.f16, "V cache type (quantized types need flash_attn)")
    flash_attn: bool = knob(False, "llama.cpp's fused FlashAttention kernel (the base runs without it)")
    buckets: list[int] = knob([0, 128, 512, 2048], "where the position buckets of the depth statistics start "
                                                   "(every position of a chunk scored)")
    n_prompt: int = knob(512, "pp test: prompt tokens (from the text) processed in one go, as llama-bench's pp512 "
                              "(0: not timed)")
    n_gen: int = knob(128, "tg test: tokens generated one at a time, as llama-bench's tg128 (0: not timed)")
    max_kld: float = knob(0.05, "the KLD budget of the report's choice: the fastest choice, and the smallest file, "
                                "whose mean KLD is within it")

    def __post_init__(self) -> None:
        self.check_model()
        require_positive(KEY, self, "n_ctx", "n_tokens")
        require_positive(KEY, self, "n_prompt", "n_gen", minimum=0)
        require(self.max_kld > 0, f"{KEY}.max_kld={self.max_kld} must be > 0: a budget of mean KL divergence in nats")
        require(self.n_ctx >= 4, f"{KEY}.n_ctx={self.n_ctx} must be >= 4: half of a chunk is its context")
        require(self.n_tokens >= self.n_ctx, f"{KEY}.n_tokens={self.n_tokens} must be >= {KEY}.n_ctx={self.n_ctx}: "
                                             "at least one whole chunk")
        require(self.type_v is CacheType.f16 or self.flash_attn, f"{KEY}.type_v={self.type_v.value} needs "
                f"{KEY}.flash_attn=true: llama.cpp quantizes the V cache only with flash attention")
        require(bool(self.buckets) and self.buckets[0] == 0 and self.buckets == sorted(set(self.buckets)),
                f"{KEY}.buckets={self.buckets} must start at 0 and rise")

    def inactive(self) -> frozenset[str]:
        return frozenset(self.model_inactive())
