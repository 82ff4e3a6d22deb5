"""Knobs of the KV-cache experiment, under ``kv.*``: each default written once, here."""

from __future__ import annotations

from dataclasses import dataclass

from experiments.framework.spec import DType, Knobs, knob, require, require_positive
from infer_core.decoder.kv_cache import Strategy
from infer_core.decoder.model import DecoderShape

KEY = "kv"


@dataclass
class KVConfig(Knobs):
    """Generate ``seq_len`` tokens one at a time, after a ``prompt_len`` prefill, under each strategy."""

    d_model: int = knob(64, "model width (`d_model % n_heads == 0`)")
    n_heads: int = knob(4, "query heads")
    n_kv_heads: int | None = knob(None, "KV heads; fewer than `n_heads` is GQA, 1 is MQA (null: `n_heads`)")
    n_layers: int = knob(1, "stacked attention blocks")
    batch: int = knob(1, "sequences generated at once")
    prompt_len: int = knob(0, "tokens prefilled in one pass before generation")
    seq_len: int = knob(100, "tokens generated one at a time")
    dtype: DType = knob(DType.float32, "float32 or float64")
    strategies: list[Strategy] = knob(list(Strategy), "any subset of `[recompute, concat, prealloc]`")

    def __post_init__(self) -> None:
        require_positive(KEY, self, "d_model", "n_heads", "n_layers", "batch", "seq_len")
        require_positive(KEY, self, "prompt_len", minimum=0)
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        require_positive(KEY, self, "n_kv_heads")
        require(self.d_model % self.n_heads == 0,
                f"{KEY}.d_model={self.d_model} must be divisible by {KEY}.n_heads={self.n_heads}")
        require(self.n_heads % self.n_kv_heads == 0,
                f"{KEY}.n_heads={self.n_heads} must be divisible by {KEY}.n_kv_heads={self.n_kv_heads}")
        names = [s.value for s in self.strategies]
        require(len(names) > 0, f"{KEY}.strategies is empty: name at least one of "
                                f"{', '.join(s.value for s in Strategy)}")
        require(len(set(names)) == len(names), f"{KEY}.strategies={names} repeats a strategy")

    @property
    def shape(self) -> DecoderShape:
        return DecoderShape(self.d_model, self.n_heads, self.n_kv_heads, self.n_layers, self.dtype.value)
