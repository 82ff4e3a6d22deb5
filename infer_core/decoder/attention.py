"""Tiled attention in NumPy: FlashAttention-2's loop order for a prompt, flash-decoding's split over the KV
cache for one query, the dense form they replace, and the slow-memory traffic each moves.

Shapes: ``q`` (n_heads, n_q, d), ``k`` and ``v`` (n_kv_heads, n_k, d); query head h reads KV head
h // (n_heads // n_kv_heads) (GQA; MQA is one KV head). Causal attention with an ``offset``: query i sits
at position offset + i and sees keys 0 … offset + i (a prompt after ``offset`` cached tokens; the default
offset is n_k − n_q).

Traffic is counted in elements, per query head as the papers count it (one head's program at a time):
"slow" memory holds Q, K, V, O (and, in the dense form, the scores), "fast" memory the blocks in flight.
Each routine counts what it moves as it runs; :func:`naive_traffic`, :func:`flash_traffic` and
:func:`decode_traffic` give the same counts in closed form.
"""

from __future__ import annotations

import itertools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass
class Traffic:
    """Elements read from and written to slow memory, and the largest intermediate array (elements)."""

    reads: int = 0
    writes: int = 0
    largest: int = 0

    @property
    def total(self) -> int:
        return self.reads + self.writes

    def keep(self, a: np.ndarray) -> np.ndarray:
        self.largest = max(self.largest, a.size)
        return a


def _shapes(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> tuple[int, int, int, int, int]:
    n_heads, n_q, d = q.shape
    n_kv, n_k, d_k = k.shape
    if k.shape != v.shape or d_k != d or n_heads % n_kv:
        raise ValueError(f"q {q.shape}, k {k.shape}, v {v.shape}: want (h, n_q, d), (h_kv, n_k, d) twice, "
                         "h divisible by h_kv")
    return n_heads, n_kv, n_q, n_k, d


def _offset(n_q: int, n_k: int, offset: int | None) -> int:
    offset = n_k - n_q if offset is None else offset
    if offset < 0 or offset + n_q > n_k:
        raise ValueError(f"offset={offset}: queries at positions offset … offset + {n_q} − 1 need keys up to there "
                         f"(n_k={n_k})")
    return offset


def naive_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: bool = True,
                    offset: int | None = None) -> tuple[np.ndarray, Traffic]:
    """The dense form (FlashAttention's "standard attention"): S = Q·Kᵀ/√d for all n_q × n_k pairs, the mask,
    P = softmax(S) in place, O = P·V. Counted as the paper counts it per head: read Q, K, write S; read S,
    write P; read P, V, write O."""
    n_heads, n_kv, n_q, n_k, d = _shapes(q, k, v)
    offset = _offset(n_q, n_k, offset)
    qg = q.reshape(n_kv, n_heads // n_kv, n_q, d)
    s = np.matmul(qg, k[:, None].swapaxes(-1, -2))  # (n_kv, g, n_q, n_k)
    s *= q.dtype.type(1 / math.sqrt(d))
    if causal:
        np.copyto(s, -np.inf, where=np.arange(n_k) > offset + np.arange(n_q)[:, None])  # key j > offset + i
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)
    out = np.matmul(s, v[:, None]).reshape(n_heads, n_q, d)
    t = Traffic(largest=s.size)
    t.reads = n_heads * (n_q * d + n_k * d + n_q * n_k + n_q * n_k + n_k * d)
    t.writes = n_heads * (n_q * n_k + n_q * n_k + n_q * d)
    return out, t


def naive_traffic(n_heads: int, n_q: int, n_k: int, d: int) -> tuple[int, int]:
    """(reads, writes) of :func:`naive_attention`: Θ(N·d + N²) per head."""
    return n_heads * (n_q * d + 2 * n_k * d + 2 * n_q * n_k), n_heads * (2 * n_q * n_k + n_q * d)


def flash_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: bool = True, block_q: int = 128,
                    block_k: int = 128, offset: int | None = None, threads: int = 1) -> tuple[np.ndarray, Traffic]:
    """FlashAttention-2: for each block of ``block_q`` queries, stream the keys and values in blocks of
    ``block_k``, keeping a running max m, running sum l and unnormalized output; rescale by exp(m_old − m_new)
    when the max grows; divide by l once at the end. Causal: keys past the block's last query are never
    read (the masked blocks are skipped) and only a block that crosses the diagonal is masked.

    ``threads`` > 1 shares the query blocks among that many threads, the most work first (FlashAttention-2
    parallelizes over the sequence the same way); NumPy and BLAS release the GIL, and the BLAS calls of each
    thread should then run on one thread (``threadpoolctl.threadpool_limits(1)``)."""
    n_heads, n_kv, n_q, n_k, d = _shapes(q, k, v)
    offset = _offset(n_q, n_k, offset)
    if block_q < 1 or block_k < 1 or threads < 1:
        raise ValueError(f"block_q={block_q}, block_k={block_k}, threads={threads}: each must be >= 1")
    g = n_heads // n_kv
    qg, kt, vg = q.reshape(n_kv, g, n_q, d), k[:, None].swapaxes(-1, -2), v[:, None]  # views, no copies
    out = np.empty((n_kv, g, n_q, d), dtype=q.dtype)

    def block(i0: int) -> Traffic:
        return _query_block(qg, kt, vg, out, i0, min(i0 + block_q, n_q), block_k, causal, offset)

    starts = list(range(0, n_q, block_q))[::-1]  # causal: the last blocks see the most keys
    if threads == 1:
        parts = [block(i0) for i0 in starts]
    else:
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(block, starts))
    t = Traffic(sum(p.reads for p in parts), sum(p.writes for p in parts), max(p.largest for p in parts))
    return out.reshape(n_heads, n_q, d), t


def _query_block(qg: np.ndarray, kt: np.ndarray, vg: np.ndarray, out: np.ndarray, i0: int, i1: int, block_k: int,
                 causal: bool, offset: int) -> Traffic:
    """One block of queries i0 … i1 − 1 against the keys it sees; its output written into ``out``."""
    n_kv, g, _, d = qg.shape
    n_heads, n_k, dt = n_kv * g, kt.shape[-1], qg.dtype.type
    t = Traffic()
    qi = t.keep(qg[:, :, i0:i1] * dt(1 / math.sqrt(d)))  # (n_kv, g, bq, d): the block in fast memory
    t.reads += n_heads * (i1 - i0) * d
    stop = min(n_k, offset + i1) if causal else n_k  # the keys any query of this block sees
    m = np.full((n_kv, g, i1 - i0, 1), -np.inf, dtype=qg.dtype)
    acc = t.keep(np.zeros((n_kv, g, i1 - i0, d), dtype=qg.dtype))
    l_sum = np.zeros_like(m)
    for j0 in range(0, stop, block_k):
        j1 = min(j0 + block_k, stop)
        t.reads += n_heads * 2 * (j1 - j0) * d  # K and V blocks
        s = t.keep(np.matmul(qi, kt[..., j0:j1]))  # (n_kv, g, bq, bk)
        if causal and j1 - 1 > offset + i0:  # the block crosses the diagonal
            np.copyto(s, -np.inf, where=np.arange(j0, j1) > offset + np.arange(i0, i1)[:, None])
        m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
        s -= m_new
        np.exp(s, out=s)
        alpha = np.exp(m - m_new)
        l_sum *= alpha
        l_sum += s.sum(axis=-1, keepdims=True)
        acc *= alpha
        acc += np.matmul(s, vg[:, :, j0:j1])
        m = m_new
    np.divide(acc, l_sum, out=out[:, :, i0:i1])
    t.writes += n_heads * (i1 - i0) * d
    return t


def flash_traffic(n_heads: int, n_q: int, n_k: int, d: int, block_q: int, causal: bool = True,
                  offset: int | None = None) -> tuple[int, int]:
    """(reads, writes) of :func:`flash_attention` in closed form: Q and O once, and for each query block the
    K and V rows it sees (all n_k, or causally up to its last query)."""
    offset = n_k - n_q if offset is None else offset
    seen = sum(min(n_k, offset + min(i0 + block_q, n_q)) if causal else n_k for i0 in range(0, n_q, block_q))
    return n_heads * (n_q * d + 2 * d * seen), n_heads * n_q * d


def fast_memory(d: int, block_q: int, block_k: int) -> int:
    """M, the elements one head keeps in fast memory: the Q block, the K and V blocks, the scores, the output
    accumulator (bq·d + 2·bk·d + bq·bk + bq·d)."""
    return 2 * block_q * d + 2 * block_k * d + block_q * block_k


def flash_formula(n_heads: int, n: int, d: int, block_q: int, block_k: int) -> float:
    """The FlashAttention paper's Θ(N²·d²/M) accesses (Theorem 2) with M = :func:`fast_memory`, constant 1."""
    return n_heads * n * n * d * d / fast_memory(d, block_q, block_k)


def flash_decode(q: np.ndarray, k: np.ndarray, v: np.ndarray, n_splits: int = 1) -> tuple[np.ndarray, Traffic]:
    """Flash-decoding: one query per head (``q`` (n_heads, d)) over a cache of n_k keys split into ``n_splits``
    parts; each part gives a partial softmax (max, sum, unnormalized output), merged by log-sum-exp."""
    n_heads, d = q.shape
    n_kv, n_k, _ = k.shape
    _shapes(q[:, None], k, v)
    if not 1 <= n_splits <= n_k:
        raise ValueError(f"n_splits={n_splits} must be between 1 and the cache length {n_k}")
    g = n_heads // n_kv
    qg = q.reshape(n_kv, g, 1, d) * q.dtype.type(1 / math.sqrt(d))
    bounds = np.linspace(0, n_k, n_splits + 1).round().astype(int)
    m = np.empty((n_splits, n_kv, g, 1, 1), dtype=q.dtype)
    l_sum, part = np.empty_like(m), np.empty((n_splits, n_kv, g, 1, d), dtype=q.dtype)
    t = Traffic()
    for s_i, (a, b) in enumerate(itertools.pairwise(bounds)):
        s = t.keep(np.matmul(qg, k[:, None, a:b].swapaxes(-1, -2)))  # (n_kv, g, 1, b - a)
        m[s_i] = s.max(axis=-1, keepdims=True)
        np.exp(s - m[s_i], out=s)
        l_sum[s_i] = s.sum(axis=-1, keepdims=True)
        part[s_i] = np.matmul(s, v[:, None, a:b])
        t.reads += n_heads * (d + 2 * (b - a) * d)
        t.writes += n_heads * (d + 2)  # the partial output, its max and its sum
    top = m.max(axis=0)
    w = np.exp(m - top)  # each part's weight: exp(m_s − M)
    out = (w * part).sum(axis=0) / (w * l_sum).sum(axis=0)
    t.reads += n_heads * n_splits * (d + 2)
    t.writes += n_heads * d
    return out.reshape(n_heads, d), t


def decode_traffic(n_heads: int, n_k: int, d: int, n_splits: int) -> tuple[int, int]:
    """(reads, writes) of :func:`flash_decode` in closed form."""
    return (n_heads * (n_splits * d + 2 * n_k * d + n_splits * (d + 2)),
            n_heads * (n_splits * (d + 2) + d))
