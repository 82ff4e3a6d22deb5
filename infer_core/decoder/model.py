"""A stack of multi-head causal self-attention blocks in flat NumPy.

Each block is pre-norm and residual: ``x = x + attn(rms_norm(x)) @ W_o``, with one
fused projection ``W_qkv`` of shape ``(d_model, d_model + 2 * d_kv)``. Heads are
vectorized; grouped-query attention (GQA) lets query head ``h`` read KV head
``h // (n_heads // n_kv_heads)``.

``forward`` is the forward pass: without a cache it is the full causal pass over the tokens
given; with a cache it appends the new keys and values and attends over everything cached so
far (a prefill). ``decode_step`` is the same arithmetic for one token per sequence, written
for the fewest NumPy calls, since a decode step at small widths costs its call overhead.
Both go through one softmax-and-PV routine, :func:`attend`, so the cache strategies differ
only in what they keep, never in how they attend.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Protocol

import numpy as np

#: Queries processed at once by the causal attention: bounds the score matrix to
#: ``QUERY_CHUNK x context`` per head, whatever the sequence length.
QUERY_CHUNK = 512

NORM_EPS = 1e-5


@dataclass(frozen=True)
class DecoderShape:
    """Shape and dtype of the decoder."""

    d_model: int
    n_heads: int
    n_kv_heads: int | None = None
    n_layers: int = 1
    dtype: str = "float32"
    d_ffn: int = 0  # width of a SwiGLU feed-forward after the attention of each block; 0: none

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        for name in ("d_model", "n_heads", "n_kv_heads", "n_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.d_ffn < 0:
            raise ValueError(f"d_ffn={self.d_ffn} must be >= 0")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}"
            )
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} must be divisible by n_kv_heads={self.n_kv_heads}"
            )
        if np.dtype(self.dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype={self.dtype} must be float32 or float64")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def d_kv(self) -> int:
        """Width of the keys (and of the values) of one token: ``n_kv_heads * d_head``."""
        return self.n_kv_heads * self.d_head

    @property
    def group(self) -> int:
        """Query heads per KV head."""
        return self.n_heads // self.n_kv_heads

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize


@dataclass
class Layer:
    """Weights of one block: fused ``w_qkv`` (d, d + 2 d_kv; the query block carries the
    1/sqrt(d_head) attention scale) and ``w_o`` (d, d); with a feed-forward, ``w_up`` (d, 2 d_ffn: gate
    then up) and ``w_down`` (d_ffn, d)."""

    w_qkv: np.ndarray
    w_o: np.ndarray
    w_up: np.ndarray | None = None
    w_down: np.ndarray | None = None


class KVCache(Protocol):
    """What :func:`forward` and :func:`decode_step` need of a KV cache (see :mod:`infer_core.decoder.kv_cache`)."""

    def append(self, layer: int, kv: np.ndarray) -> np.ndarray:
        """Store new tokens, given as columns (batch, 2 * d_kv, new tokens); return every cached token,
        (batch, 2, n_kv_heads, d_head, tokens)."""
        ...


@dataclass
class Decoder:
    """Decoder weights and shape; build one with :func:`init_decoder`."""

    shape: DecoderShape
    layers: list[Layer] = field(default_factory=list)

    def astype(self, dtype: str) -> Decoder:
        """The same weights in another dtype (e.g. float64 for a reference)."""
        shape = dataclasses.replace(self.shape, dtype=dtype)
        layers = [Layer(*(None if w is None else w.astype(dtype) for w in (lay.w_qkv, lay.w_o, lay.w_up, lay.w_down)))
                  for lay in self.layers]
        return Decoder(shape, layers)


def init_decoder(shape: DecoderShape, rng: np.random.Generator) -> Decoder:
    """Random weights N(0, 1/d_model) drawn from ``rng`` in the decoder's dtype.

    The attention scale 1/sqrt(d_head) is folded into the query block of ``w_qkv``, as inference
    engines do, so scores are plain dot products q·k.
    """
    d, dtype = shape.d_model, np.dtype(shape.dtype)
    scale = dtype.type(1.0 / np.sqrt(d))
    layers = []
    for _ in range(shape.n_layers):
        w_qkv = rng.standard_normal((d, d + 2 * shape.d_kv), dtype=dtype) * scale
        w_qkv[:, :d] *= dtype.type(1.0 / np.sqrt(shape.d_head))
        w_o = rng.standard_normal((d, d), dtype=dtype) * scale
        if shape.d_ffn:
            w_up = rng.standard_normal((d, 2 * shape.d_ffn), dtype=dtype) * scale
            w_down = rng.standard_normal((shape.d_ffn, d), dtype=dtype) * dtype.type(1.0 / np.sqrt(shape.d_ffn))
            layers.append(Layer(w_qkv, w_o, w_up, w_down))
        else:
            layers.append(Layer(w_qkv, w_o))
    return Decoder(shape, layers)


def rms_norm(x: np.ndarray) -> np.ndarray:
    """RMSNorm over the last axis, without a gain: ``x / sqrt(mean(x**2) + eps)``.

    A single vector (one sequence's decode step) gets its scale as a Python float: two NumPy
    calls instead of five, which is most of the cost at small widths.
    """
    d = x.shape[-1]
    if x.size == d:
        return x * (1.0 / math.sqrt(float(np.vdot(x, x)) / d + NORM_EPS))
    inv_d, eps = x.dtype.type(1.0 / d), x.dtype.type(NORM_EPS)
    return x * ((np.vecdot(x, x)[..., None] * inv_d + eps) ** -0.5)


def attend(e: np.ndarray, vt: np.ndarray) -> np.ndarray:
    """``softmax(e) @ V`` over the last axis of the scores ``e`` (..., rows, L), which it overwrites;
    ``vt`` is V transposed, (..., d_head, L). Returns (..., rows, d_head).

    Each row is shifted by its maximum (rows must hold at least one finite value) and normalized
    after the product with V: ``d_head`` divisions per row instead of L.
    """
    e -= np.maximum.reduce(e, axis=-1, keepdims=True)
    np.exp(e, out=e)
    o = e @ vt.swapaxes(-1, -2)
    o /= np.add.reduce(e, axis=-1, keepdims=True)
    return o


def feed_forward(layer: Layer, x: np.ndarray) -> np.ndarray:
    """``x`` plus the block's SwiGLU feed-forward of ``rms_norm(x)`` (``x`` itself without one): (..., d_model)."""
    if layer.w_up is None:
        return x
    gate, up = np.split(rms_norm(x) @ layer.w_up, 2, axis=-1)
    return x + (gate / (1 + np.exp(-gate)) * up) @ layer.w_down


@lru_cache(maxsize=4)
def _future_bias(dtype: np.dtype) -> np.ndarray:
    """(QUERY_CHUNK, QUERY_CHUNK) additive mask: -inf above the diagonal, 0 elsewhere."""
    bias = np.zeros((QUERY_CHUNK, QUERY_CHUNK), dtype=dtype)
    bias[np.triu_indices(QUERY_CHUNK, 1)] = -np.inf
    return bias


def causal_attention(q: np.ndarray, kt: np.ndarray, vt: np.ndarray, offset: int) -> np.ndarray:
    """Causal softmax attention of new queries over all keys, heads vectorized.

    ``q``: (B, n_kv_heads, group, Tq, d_head), already scaled by 1/sqrt(d_head); ``kt``, ``vt``:
    keys and values transposed, (B, n_kv_heads, d_head, L), as caches hold them (any strides).
    Query ``i`` sits at absolute position ``offset + i`` and sees keys ``0 .. offset + i``.
    Returns (B, n_kv_heads, group, Tq, d_head).
    Queries go in chunks of ``QUERY_CHUNK``, each against the keys up to its last position;
    only the chunk's own last ``tc`` keys can lie in some query's future, so only they are masked.
    """
    b, hkv, g, tq, dh = q.shape
    chunks = []
    for c0 in range(0, tq, QUERY_CHUNK):
        c1 = min(tq, c0 + QUERY_CHUNK)
        tc, kend = c1 - c0, offset + c1
        s = q[:, :, :, c0:c1].reshape(b, hkv, g * tc, dh) @ kt[..., :kend]
        if tc > 1:
            s.reshape(b, hkv, g, tc, kend)[..., kend - tc :] += _future_bias(s.dtype)[:tc, :tc]
        chunks.append(attend(s, vt[..., :kend]).reshape(b, hkv, g, tc, dh))
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=3)


def block(layer: Layer, x: np.ndarray, attention: Callable[[np.ndarray], np.ndarray],
          out: np.ndarray | None = None) -> np.ndarray:
    """One decoder block over rows of hidden states ``x`` (rows, d_model), as every path runs it (the full forward,
    the cached decode step, the paged prefill and the paged decode step): the pre-norm QKV projection, the path's
    own ``attention(qkv)`` (it stores the new K and V where that path keeps them and returns (rows, d_model)), the
    output projection and residual (into ``out`` if given), then the feed-forward."""
    qkv = np.dot(rms_norm(x), layer.w_qkv)  # (rows, d + 2 d_kv)
    return feed_forward(layer, np.add(x, np.dot(attention(qkv), layer.w_o), out=out))


def forward(model: Decoder, x: np.ndarray, cache: KVCache | None = None) -> np.ndarray:
    """Run the blocks over ``x`` (B, T, d_model) and return the hidden states (B, T, d_model).

    Without ``cache`` this is the full causal pass over the T tokens. With a cache (see
    :mod:`infer_core.decoder.kv_cache`) the T tokens follow those already cached: their keys and
    values are appended and they attend over the whole cache.
    """
    s = model.shape
    b, t, d = x.shape
    hkv, g, dh = s.n_kv_heads, s.group, s.d_head

    def attention(i: int, qkv: np.ndarray) -> np.ndarray:
        q = qkv[:, :d].reshape(b, t, hkv, g, dh).transpose(0, 2, 3, 1, 4)
        kv = qkv[:, d:].reshape(b, t, 2 * s.d_kv).transpose(0, 2, 1)  # one column per token
        kv = kv.reshape(b, 2, hkv, dh, t) if cache is None else cache.append(i, kv)  # (B, 2, Hkv, d_head, L)
        o = causal_attention(q, kv[:, 0], kv[:, 1], offset=kv.shape[-1] - t)
        return o.transpose(0, 3, 1, 2, 4).reshape(b * t, d)

    rows = x.reshape(b * t, d)
    for i, layer in enumerate(model.layers):
        rows = block(layer, rows, partial(attention, i))
    return rows.reshape(b, t, d)


def decode_step(model: Decoder, x: np.ndarray, cache: KVCache, out: np.ndarray | None = None) -> np.ndarray:
    """One generated token per sequence: ``x`` (B, d_model) after the cached ones; returns (B, d_model),
    written into ``out`` if given.

    The same arithmetic as :func:`forward` for one token, with the fewest NumPy calls: at small
    widths a decode step costs its call overhead, not its FLOPs. The new keys and values go into
    the cache as one column; the softmax is normalized after the product with V (dividing
    ``d_head`` values per head instead of L).
    """
    s = model.shape
    b, d = x.shape
    heads = (b, s.n_kv_heads, s.group, s.d_head)  # query heads grouped by the KV head they read
    last = len(model.layers) - 1

    def attention(i: int, qkv: np.ndarray) -> np.ndarray:
        kv = cache.append(i, qkv[:, d:, None])  # the token's column in; (B, 2, Hkv, d_head, L) out
        return attend(qkv[:, :d].reshape(heads) @ kv[:, 0], kv[:, 1]).reshape(b, d)  # (B, Hkv, G, d_head) -> rows

    for i, layer in enumerate(model.layers):
        x = block(layer, x, partial(attention, i), out=out if i == last else None)
    if out is not None and x is not out:  # the last block's feed-forward made a new array
        out[...] = x
        return out
    return x
