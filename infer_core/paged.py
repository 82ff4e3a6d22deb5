"""A paged KV cache (PagedAttention's layout) and attention that reads it through block tables.

:class:`BlockTables` is the bookkeeping: a pool of ``num_blocks`` blocks of ``block_size`` token slots, a
block table per sequence (the blocks holding its tokens, in order), reference counts. Extending a sequence
takes a new block only when its last one is full. ``fork`` shares the parent's blocks (their reference
counts go up) and a shared block is copied only when one of its owners writes into it (copy-on-write), so
samples of one prompt keep one copy of it. ``free`` returns the blocks no one else holds.

:class:`PagedKVCache` adds the storage: K and V pools (n_layers, num_blocks, n_kv_heads, block_size,
d_head). Nothing is ever gathered into a contiguous copy: attention runs one product per block into a
score buffer, the softmax, then P·V per block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from infer_core.attention import Decoder, feed_forward, rms_norm


class OutOfBlocks(RuntimeError):
    """The pool has no free block left: the caller preempts a sequence (or waits)."""


class BlockTables:
    """Block tables, reference counts and the free list of a pool of ``num_blocks`` blocks."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if min(num_blocks, block_size) < 1:
            raise ValueError(f"num_blocks={num_blocks}, block_size={block_size}: each must be >= 1")
        self.block_size = block_size
        self.refs = np.zeros(num_blocks, dtype=np.int64)
        self.free_blocks = list(range(num_blocks - 1, -1, -1))  # popped from the end: block 0 first
        self.tables: dict[int, list[int]] = {}
        self.lengths: dict[int, int] = {}
        self.copied = 0  # blocks copied on write

    @property
    def num_blocks(self) -> int:
        return len(self.refs)

    @property
    def num_free(self) -> int:
        return len(self.free_blocks)

    def blocks_for(self, tokens: int) -> int:
        """Blocks that hold ``tokens`` tokens."""
        return -(-tokens // self.block_size)

    def _take(self) -> int:
        if not self.free_blocks:
            raise OutOfBlocks(f"all {self.num_blocks} blocks of {self.block_size} tokens are in use")
        block = self.free_blocks.pop()
        self.refs[block] = 1
        return block

    def add(self, seq: int) -> None:
        """A new, empty sequence."""
        if seq in self.tables:
            raise ValueError(f"sequence {seq} already exists")
        self.tables[seq], self.lengths[seq] = [], 0

    def extend(self, seq: int, t: int) -> tuple[int, int] | None:
        """Make room for ``t`` more tokens of ``seq`` (its length grows by ``t``). A shared, not full last block
        is replaced by a fresh one first: returns (source, copy) then, for the caller to copy its contents.
        On :class:`OutOfBlocks` nothing of this call is kept."""
        table, start = self.tables[seq], self.lengths[seq]
        cow = bool(start % self.block_size) and self.refs[table[-1]] > 1
        need = self.blocks_for(start + t) - len(table) + cow
        if need > self.num_free:
            raise OutOfBlocks(f"all {self.num_blocks} blocks of {self.block_size} tokens are in use")
        copy = None
        if cow:
            copy = (table[-1], self._take())
            self.refs[copy[0]] -= 1
            table[-1] = copy[1]
            self.copied += 1
        while len(table) < self.blocks_for(start + t):
            table.append(self._take())
        self.lengths[seq] = start + t
        return copy

    def fork(self, parent: int, child: int) -> None:
        """``child`` starts as ``parent``: the same blocks, shared until one of them writes."""
        self.add(child)
        self.tables[child] = list(self.tables[parent])
        self.lengths[child] = self.lengths[parent]
        self.refs[self.tables[child]] += 1

    def free(self, seq: int) -> None:
        """Drop ``seq``; its blocks no other sequence holds go back to the pool."""
        self.truncate(seq, 0)
        del self.tables[seq], self.lengths[seq]

    def truncate(self, seq: int, n: int) -> None:
        """Keep the first ``n`` tokens of ``seq``; blocks past them go back (if no one else holds them)."""
        table = self.tables[seq]
        while len(table) > self.blocks_for(n):
            block = table.pop()
            self.refs[block] -= 1
            if self.refs[block] == 0:
                self.free_blocks.append(block)
        self.lengths[seq] = n

    def slot(self, seq: int, pos: int) -> tuple[int, int]:
        """(block, offset) of token ``pos`` of ``seq``."""
        return self.tables[seq][pos // self.block_size], pos % self.block_size


@dataclass
class Swapped:
    """A sequence's K and V copied out of the pool (n_layers, n_kv_heads, length, d_head): a host copy."""

    k: np.ndarray
    v: np.ndarray

    @property
    def length(self) -> int:
        return self.k.shape[2]


class PagedKVCache(BlockTables):
    """A block pool with storage: K and V of ``n_layers`` layers, (n_layers, num_blocks, n_kv_heads, block_size,
    d_head) each."""

    def __init__(self, num_blocks: int, block_size: int, n_kv_heads: int, d_head: int,
                 dtype: np.dtype | type = np.float32, n_layers: int = 1) -> None:
        super().__init__(num_blocks, block_size)
        if min(n_kv_heads, d_head, n_layers) < 1:
            raise ValueError(f"n_kv_heads={n_kv_heads}, d_head={d_head}, n_layers={n_layers}: each must be >= 1")
        shape = (n_layers, num_blocks, n_kv_heads, block_size, d_head)
        self.k, self.v = np.zeros(shape, dtype=dtype), np.zeros(shape, dtype=dtype)

    def extend(self, seq: int, t: int) -> tuple[int, int] | None:
        copy = super().extend(seq, t)
        if copy:
            self.k[:, copy[1]], self.v[:, copy[1]] = self.k[:, copy[0]], self.v[:, copy[0]]
        return copy

    def write(self, seq: int, layer: int, start: int, k: np.ndarray, v: np.ndarray) -> None:
        """Store tokens ``start`` … of ``seq`` (room made by :meth:`extend`): ``k``, ``v`` (n_kv_heads, t, d_head)."""
        bs, table = self.block_size, self.tables[seq]
        pos, end = start, start + k.shape[1]
        while pos < end:
            block, off = table[pos // bs], pos % bs
            n = min(end - pos, bs - off)
            self.k[layer, block, :, off:off + n] = k[:, pos - start:pos - start + n]
            self.v[layer, block, :, off:off + n] = v[:, pos - start:pos - start + n]
            pos += n

    def append(self, seq: int, k: np.ndarray, v: np.ndarray) -> None:
        """Append tokens to a one-layer cache: ``k``, ``v`` (n_kv_heads, t, d_head)."""
        start = self.lengths[seq]
        self.extend(seq, k.shape[1])
        self.write(seq, 0, start, k, v)

    def contiguous(self, seq: int, layer: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """K and V of ``seq`` as contiguous copies (n_kv_heads, length, d_head): for checking and swapping."""
        n, table = self.lengths[seq], self.tables[seq]
        if not table:
            return self.k[layer, 0, :, :0].copy(), self.v[layer, 0, :, :0].copy()
        return (np.concatenate([self.k[layer, b] for b in table], axis=1)[:, :n],
                np.concatenate([self.v[layer, b] for b in table], axis=1)[:, :n])

    def copy_out(self, seq: int) -> Swapped:
        """A host copy of ``seq``'s K and V, for swapping it out (the blocks stay until the caller frees them)."""
        layers = [self.contiguous(seq, i) for i in range(self.k.shape[0])]
        return Swapped(np.stack([k for k, _ in layers]), np.stack([v for _, v in layers]))

    def copy_in(self, seq: int, saved: Swapped) -> None:
        """Write a host copy back into ``seq``'s blocks (room made with :meth:`extend`)."""
        for layer in range(self.k.shape[0]):
            self.write(seq, layer, 0, saved.k[layer], saved.v[layer])


def paged_attention(cache: PagedKVCache, seq: int, q: np.ndarray, layer: int = 0, scale: float | None = None,
                    scores: np.ndarray | None = None, upto: int | None = None) -> np.ndarray:
    """Queries ``q`` (n_heads, t, d_head) of tokens ``upto − t`` … ``upto − 1`` of ``seq`` (``upto``: its length by
    default) over its cached tokens before ``upto`` (causal: query i sees keys up to upto − t + i), read block by
    block through its table. ``scale`` defaults to 1/sqrt(d_head); ``scores`` is an optional buffer of at least
    (n_kv, group·t, blocks·block_size). Returns (n_heads, t, d_head)."""
    n_heads, t, d = q.shape
    k_pool, v_pool = cache.k[layer], cache.v[layer]
    n_kv, bs = k_pool.shape[1], cache.block_size
    g = n_heads // n_kv
    n, table = cache.lengths[seq] if upto is None else upto, cache.tables[seq]
    blocks = -(-n // bs)
    qi = q.reshape(n_kv, g * t, d)
    if scale is None or scale != 1:
        qi = qi * q.dtype.type(1 / math.sqrt(d) if scale is None else scale)
    if scores is None or scores.shape[-1] < blocks * bs or scores.shape[1] < g * t:
        scores = np.empty((n_kv, g * t, blocks * bs), dtype=q.dtype)
    s = scores[:, :g * t]
    for j, block in enumerate(table[:blocks]):
        np.matmul(qi, k_pool[block].swapaxes(-1, -2), out=s[:, :, j * bs:(j + 1) * bs])
    s = s[:, :, :n]
    if t > 1:  # the new tokens: query i must not see keys past position n − t + i
        future = np.arange(n)[None, :] > (n - t + np.arange(t))[:, None]  # (t, n)
        s.reshape(n_kv, g, t, n)[:, :, future] = -np.inf
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    acc = np.matmul(s[:, :, :min(bs, n)], v_pool[table[0], :, :min(bs, n)])
    for j, block in enumerate(table[1:blocks], start=1):
        w = min(bs, n - j * bs)
        acc += np.matmul(s[:, :, j * bs:j * bs + w], v_pool[block, :, :w])
    acc /= s.sum(axis=-1, keepdims=True)
    return acc.reshape(n_heads, t, d)


def paged_decode_attention(cache: PagedKVCache, seqs: list[int], q: np.ndarray, layer: int = 0,
                           scale: float | None = None) -> np.ndarray:
    """One query per sequence (``q`` (batch, n_heads, d_head)) over each sequence's cached tokens, through its
    block table (:func:`paged_attention`, one score buffer for the batch). Returns (batch, n_heads, d_head)."""
    n_heads = q.shape[1]
    n_kv = cache.k.shape[2]
    if len(seqs) != q.shape[0] or n_heads % n_kv:
        raise ValueError(f"q {q.shape} for {len(seqs)} sequences and {n_kv} KV heads: want (batch, h, d), "
                         "h divisible by the KV heads")
    longest = max(cache.lengths[s] for s in seqs)
    scores = np.empty((n_kv, n_heads // n_kv, cache.blocks_for(longest) * cache.block_size), dtype=q.dtype)
    out = np.empty_like(q)
    for i, seq in enumerate(seqs):
        out[i] = paged_attention(cache, seq, q[i][:, None], layer, scale, scores)[:, 0]
    return out


def paged_forward(model: Decoder, x: np.ndarray, cache: PagedKVCache, seq: int, start: int | None = None
                  ) -> np.ndarray:
    """Tokens ``start`` … ``start + t − 1`` of ``seq`` (room made with :meth:`PagedKVCache.extend`; by default its
    last ``t``) through the blocks of ``model``: ``x`` (t, d_model) in, hidden states (t, d_model) out; their K and
    V land in the cache. A whole prompt, a chunk of one, or one token: each attends to every token before it."""
    s = model.shape
    t, d = x.shape
    start = cache.lengths[seq] - t if start is None else start
    for i, layer in enumerate(model.layers):
        qkv = rms_norm(x) @ layer.w_qkv  # (t, d + 2 d_kv)
        k = qkv[:, d:d + s.d_kv].reshape(t, s.n_kv_heads, s.d_head).transpose(1, 0, 2)
        v = qkv[:, d + s.d_kv:].reshape(t, s.n_kv_heads, s.d_head).transpose(1, 0, 2)
        cache.write(seq, i, start, k, v)
        q = qkv[:, :d].reshape(t, s.n_heads, s.d_head).transpose(1, 0, 2)
        o = paged_attention(cache, seq, q, i, scale=1.0, upto=start + t)  # the scale is in w_qkv
        x = feed_forward(layer, x + o.transpose(1, 0, 2).reshape(t, d) @ layer.w_o)
    return x


def paged_decode_step(model: Decoder, x: np.ndarray, cache: PagedKVCache, seqs: list[int]) -> np.ndarray:
    """One token per sequence, batched: ``x`` (batch, d_model) is the newest token of each of ``seqs`` (room made
    with :meth:`PagedKVCache.extend`); projections run once for the batch, attention per sequence through its
    block table. Returns (batch, d_model)."""
    s = model.shape
    b, d = x.shape
    slots = [cache.slot(seq, cache.lengths[seq] - 1) for seq in seqs]
    blocks, offsets = np.array([a for a, _ in slots]), np.array([o for _, o in slots])
    for i, layer in enumerate(model.layers):
        qkv = rms_norm(x) @ layer.w_qkv  # (B, d + 2 d_kv)
        cache.k[i, blocks, :, offsets] = qkv[:, d:d + s.d_kv].reshape(b, s.n_kv_heads, s.d_head)
        cache.v[i, blocks, :, offsets] = qkv[:, d + s.d_kv:].reshape(b, s.n_kv_heads, s.d_head)
        o = paged_decode_attention(cache, seqs, qkv[:, :d].reshape(b, s.n_heads, s.d_head), i, scale=1.0)
        x = feed_forward(layer, x + o.reshape(b, d) @ layer.w_o)
    return x
