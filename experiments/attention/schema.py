"""Knobs of the attention experiment, under ``attn.*``: each default written once, here."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from experiments.framework.bench import point_threads
from experiments.framework.spec import DType, Knobs, knob, require, require_positive

KEY = "attn"


class Impl(Enum):
    naive = "naive"  # the dense form: every score in an N×N array, then softmax, then P·V
    flash = "flash"  # FlashAttention-2 (prefill) or flash-decoding (decode): blocks, running max and sum


class Phase(Enum):
    prefill = "prefill"  # seq_len queries over seq_len keys
    decode = "decode"  # one query over a cache of seq_len keys


@dataclass
class AttnConfig(Knobs):
    """One attention call, timed, its peak memory measured and its slow-memory traffic counted."""

    impl: Impl = knob(Impl.flash, "`naive` (the dense form) or `flash` (tiled, online softmax)")
    phase: Phase = knob(Phase.prefill, "`prefill` (N queries) or `decode` (one query over a cache of N keys)")
    seq_len: int = knob(1024, "N: queries and keys (prefill), or keys in the cache (decode)")
    d_head: int = knob(128, "width of a head")
    n_heads: int = knob(1, "query heads")
    n_kv_heads: int | None = knob(None, "KV heads; fewer than `n_heads` is GQA, 1 is MQA (null: `n_heads`)")
    block_q: int = knob(256, "flash prefill: queries per block")
    block_k: int = knob(256, "flash prefill: keys and values per block")
    n_splits: int = knob(8, "flash decode: parts of the cache reduced apart, then merged")
    causal: bool = knob(True, "prefill: each query sees only the keys up to its own position")
    dtype: DType = knob(DType.float32, "float32 or float64")
    max_gib: float = knob(4.0, "memory budget of one call: a point whose estimate is over it is refused before "
                               "allocating")
    check_rows: int = knob(256, "query rows checked against a float64 dense pass (all of them when fewer)")

    def __post_init__(self) -> None:
        require_positive(KEY, self, "seq_len", "d_head", "n_heads", "block_q", "block_k", "n_splits", "check_rows")
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        require_positive(KEY, self, "n_kv_heads")
        require(self.n_heads % self.n_kv_heads == 0,
                f"{KEY}.n_heads={self.n_heads} must be divisible by {KEY}.n_kv_heads={self.n_kv_heads}")
        require(self.max_gib > 0, f"{KEY}.max_gib={self.max_gib} must be > 0")
        if self.phase is Phase.decode and self.impl is Impl.flash:
            require(self.n_splits <= self.seq_len, f"{KEY}.n_splits={self.n_splits} must be <= {KEY}.seq_len="
                                                   f"{self.seq_len}: a part holds at least one key")

    def inactive(self) -> frozenset[str]:
        skip = {"block_q", "block_k", "n_splits"} if self.impl is Impl.naive else set()
        if self.phase is Phase.decode:
            skip |= {"block_q", "block_k", "causal"}
        else:
            skip.add("n_splits")
        return frozenset(skip)

    @property
    def n_threads(self) -> int:
        """Flash prefill's workers over query blocks (one-thread BLAS each), or naive's and decode's BLAS threads:
        the point's thread count (``bench.threads``)."""
        return point_threads()
