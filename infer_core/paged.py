"""A paged KV cache (PagedAttention's layout) and decode attention that reads it through block tables.

The pool holds ``num_blocks`` blocks of ``block_size`` token slots for K and for V, each block
(n_kv_heads, block_size, d_head). A sequence owns a block table (the blocks holding its tokens, in order);
appending takes a new block only when its last one is full. ``fork`` shares the parent's blocks (their
reference counts go up) and a shared block is copied only when one of its owners writes into it
(copy-on-write), so samples of one prompt keep one copy of it. ``free`` returns the blocks no one else
holds. Nothing is ever gathered into a contiguous copy: attention runs one product per block.
"""

from __future__ import annotations

import math

import numpy as np


class OutOfBlocks(RuntimeError):
    """The pool has no free block left: the caller preempts a sequence (or waits)."""


class PagedKVCache:
    """A block pool for one layer's K and V, block tables per sequence, copy-on-write sharing."""

    def __init__(self, num_blocks: int, block_size: int, n_kv_heads: int, d_head: int,
                 dtype: np.dtype | type = np.float32) -> None:
        if min(num_blocks, block_size, n_kv_heads, d_head) < 1:
            raise ValueError(f"num_blocks={num_blocks}, block_size={block_size}, n_kv_heads={n_kv_heads}, "
                             f"d_head={d_head}: each must be >= 1")
        shape = (num_blocks, n_kv_heads, block_size, d_head)
        self.k, self.v = np.zeros(shape, dtype=dtype), np.zeros(shape, dtype=dtype)
        self.block_size = block_size
        self.refs = np.zeros(num_blocks, dtype=np.int64)
        self.free_blocks = list(range(num_blocks - 1, -1, -1))  # popped from the end: block 0 first
        self.tables: dict[int, list[int]] = {}
        self.lengths: dict[int, int] = {}
        self.copied = 0  # blocks copied on write

    @property
    def num_free(self) -> int:
        return len(self.free_blocks)

    def _take(self) -> int:
        if not self.free_blocks:
            raise OutOfBlocks(f"all {len(self.refs)} blocks of {self.block_size} tokens are in use")
        block = self.free_blocks.pop()
        self.refs[block] = 1
        return block

    def add(self, seq: int) -> None:
        """A new, empty sequence."""
        if seq in self.tables:
            raise ValueError(f"sequence {seq} already exists")
        self.tables[seq], self.lengths[seq] = [], 0

    def append(self, seq: int, k: np.ndarray, v: np.ndarray) -> None:
        """Append tokens ``k``, ``v`` (n_kv_heads, t, d_head) to ``seq``. Takes blocks as its last fills, copies
        a shared last block before writing into it; on :class:`OutOfBlocks` nothing of this call is kept."""
        table, start, t = self.tables[seq], self.lengths[seq], k.shape[1]
        taken, old_table = [], list(table)
        try:
            if start % self.block_size and self.refs[table[-1]] > 1:  # shared and not full: copy on write
                fresh = self._take()
                taken.append(fresh)
                self.k[fresh], self.v[fresh] = self.k[table[-1]], self.v[table[-1]]
                table[-1] = fresh
            while len(table) * self.block_size < start + t:
                taken.append(self._take())
                table.append(taken[-1])
        except OutOfBlocks:
            for block in taken:
                self.refs[block] = 0
                self.free_blocks.append(block)
            table[:] = old_table
            raise
        if old_table and table[len(old_table) - 1] != old_table[-1]:
            self.refs[old_table[-1]] -= 1
            self.copied += 1
        for a, b in _spans(start, t, self.block_size):
            block, off = table[a // self.block_size], a % self.block_size
            self.k[block, :, off:off + b - a] = k[:, a - start:b - start]
            self.v[block, :, off:off + b - a] = v[:, a - start:b - start]
        self.lengths[seq] = start + t

    def fork(self, parent: int, child: int) -> None:
        """``child`` starts as ``parent``: the same blocks, shared until one of them writes."""
        self.add(child)
        self.tables[child] = list(self.tables[parent])
        self.lengths[child] = self.lengths[parent]
        self.refs[self.tables[child]] += 1

    def free(self, seq: int) -> None:
        """Drop ``seq``; its blocks no other sequence holds go back to the pool."""
        for block in self.tables.pop(seq):
            self.refs[block] -= 1
            if self.refs[block] == 0:
                self.free_blocks.append(block)
        del self.lengths[seq]

    def contiguous(self, seq: int) -> tuple[np.ndarray, np.ndarray]:
        """K and V of ``seq`` as contiguous copies (n_kv_heads, length, d_head): for checking, not for attention."""
        n, table = self.lengths[seq], self.tables[seq]
        if not table:
            return self.k[0, :, :0].copy(), self.v[0, :, :0].copy()
        return (np.concatenate([self.k[b] for b in table], axis=1)[:, :n],
                np.concatenate([self.v[b] for b in table], axis=1)[:, :n])


def _spans(start: int, t: int, size: int) -> list[tuple[int, int]]:
    """Positions start … start + t − 1 cut at block boundaries, as (first, end) pairs."""
    out, pos = [], start
    while pos < start + t:
        end = min(start + t, (pos // size + 1) * size)
        out.append((pos, end))
        pos = end
    return out


def paged_decode_attention(cache: PagedKVCache, seqs: list[int], q: np.ndarray) -> np.ndarray:
    """One query per sequence (``q`` (batch, n_heads, d_head)) over each sequence's cached tokens, read block by
    block through its table: a product per block into one score buffer, the softmax, then P·V per block."""
    _, n_heads, d = q.shape
    n_kv, bs = cache.k.shape[1], cache.block_size
    g = n_heads // n_kv
    if len(seqs) != q.shape[0] or n_heads % n_kv:
        raise ValueError(f"q {q.shape} for {len(seqs)} sequences and {n_kv} KV heads: want (batch, h, d), "
                         "h divisible by the KV heads")
    longest = max(cache.lengths[s] for s in seqs)
    scores = np.empty((n_kv, g, math.ceil(longest / bs) * bs), dtype=q.dtype)
    out = np.empty_like(q)
    for i, seq in enumerate(seqs):
        n, table = cache.lengths[seq], cache.tables[seq]
        qi = q[i].reshape(n_kv, g, d) * q.dtype.type(1 / math.sqrt(d))
        blocks = math.ceil(n / bs)
        for j, block in enumerate(table[:blocks]):
            np.matmul(qi, cache.k[block].swapaxes(-1, -2), out=scores[:, :, j * bs:(j + 1) * bs])
        s = scores[:, :, :n]
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=-1, keepdims=True)
        acc = np.zeros((n_kv, g, d), dtype=q.dtype)
        for j, block in enumerate(table[:blocks]):
            w = min(bs, n - j * bs)
            acc += np.matmul(s[:, :, j * bs:j * bs + w], cache.v[block, :, :w])
        out[i] = acc.reshape(n_heads, d)
    return out
