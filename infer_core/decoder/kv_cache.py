"""KV caches (grown by concatenation, or preallocated) and the KV-cache memory calculator.

A cache holds, per layer, keys and values transposed, token index last, as one array laid out
(batch, 2, n_kv_heads, d_head, tokens): index 0 of axis 1 the keys, 1 the values. Each head's
K^T and V^T are then ``d_head`` contiguous rows over the tokens, which the attention products
stream along (``q @ K^T`` and ``V^T @ p``), and one token's keys and values are one column of
``2 * d_kv`` values, in the order the projection writes them (keys then values, head-major).

``append(layer, columns)`` takes the new tokens as such columns, (batch, 2 * d_kv, new tokens),
writes them in one call and returns everything cached so far, (batch, 2, n_kv_heads, d_head, tokens).
Each cache counts the bytes it writes (``bytes_written``, since the last ``reset``): a concat
append rewrites the whole cache, a prealloc append only the new tokens.
"""

from __future__ import annotations

from enum import Enum

import numpy as np

from infer_core.decoder.model import DecoderShape


class Strategy(Enum):
    """How generation treats past keys and values."""

    recompute = "recompute"  # no cache: full causal pass over all t tokens at every step
    concat = "concat"  # cache grown with np.concatenate: O(t) copy per step
    prealloc = "prealloc"  # preallocated buffer: O(1) write per step


class ConcatCache:
    """Cache grown by ``np.concatenate`` along the token axis: every append copies it all."""

    def __init__(self, shape: DecoderShape, batch: int) -> None:
        self.heads = (batch, 2, shape.n_kv_heads, shape.d_head)
        self.n_layers = shape.n_layers
        self.reset()

    def reset(self) -> None:
        self.columns: list[np.ndarray | None] = [None] * self.n_layers  # (B, 2 d_kv, tokens) each
        self.bytes_written = 0

    def append(self, layer: int, kv: np.ndarray) -> np.ndarray:
        old = self.columns[layer]
        new = np.ascontiguousarray(kv) if old is None else np.concatenate([old, kv], axis=-1)
        self.columns[layer] = new
        self.bytes_written += new.nbytes
        return new.reshape(*self.heads, new.shape[-1])


class PreallocCache:
    """Cache in one buffer allocated for ``max_len`` tokens: an append writes only the new tokens."""

    def __init__(self, shape: DecoderShape, batch: int, max_len: int) -> None:
        dims = (shape.n_layers, batch, 2, shape.n_kv_heads, shape.d_head, max_len)
        self.kv = np.empty(dims, dtype=shape.dtype)
        # per layer, the same buffer as (B, 2 d_kv, max_len): an append writes its columns in one call
        self.columns = [kv.reshape(batch, 2 * shape.d_kv, max_len) for kv in self.kv]
        self.max_len = max_len
        self.reset()

    def reset(self) -> None:
        self.length = [0] * self.kv.shape[0]
        self.bytes_written = 0

    def truncate(self, length: int) -> None:
        """Forget every token after the first ``length`` (in every layer)."""
        if not 0 <= length <= min(self.length):
            raise ValueError(f"truncate({length}): the cache holds {min(self.length)} tokens")
        self.length = [length] * len(self.length)

    def append(self, layer: int, kv: np.ndarray) -> np.ndarray:
        start = self.length[layer]
        end = start + kv.shape[-1]
        if end > self.max_len:
            raise ValueError(f"PreallocCache holds {self.max_len} tokens; appending would make {end}")
        self.columns[layer][..., start:end] = kv
        self.length[layer] = end
        self.bytes_written += kv.nbytes
        return self.kv[layer, ..., :end]


def kv_cache_bytes(
    n_layers: int,
    n_kv_heads: int,
    d_head: int,
    seq_len: int,
    batch: int = 1,
    bytes_per_element: int = 2,
) -> int:
    """KV-cache size: 2 (K and V) x layers x KV heads x d_head x tokens x batch x bytes per element."""
    return 2 * n_layers * n_kv_heads * d_head * seq_len * batch * bytes_per_element
