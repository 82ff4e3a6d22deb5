"""A paged KV cache (PagedAttention's layout) and attention that reads it through block tables.

:class:`BlockTables` is the bookkeeping: a pool of ``num_blocks`` blocks of ``block_size`` token slots, a
block table per sequence (the blocks holding its tokens, in order), reference counts. Extending a sequence
takes a new block only when its last one is full. ``fork`` shares the parent's blocks (their reference
counts go up) and a shared block is copied only when one of its owners writes into it (copy-on-write), so
samples of one prompt keep one copy of it. ``free`` returns the blocks no one else holds.

:class:`PagedKVCache` adds the storage: K and V pools (n_layers, n_kv_heads, d_head, num_blocks · block_size), a
token's K and V a column as in the contiguous cache, block ``b`` columns ``b · block_size`` …; and it chooses which
free block a sequence gets so that its blocks form runs. Nothing is ever gathered into a contiguous copy:
:func:`batch_attention` reads the blocks where they lie, one product per *window* of the pool (:func:`windows`:
a run of a sequence's blocks, or blocks of sequences that grew interleaved, read once for all of them), masks
out the columns a query may not see, and combines each sequence's windows by their softmax maxima and sums.
Long rows make fast products: a run reads about as fast as the contiguous cache; a sequence scattered over
blocks far apart pays for a product per block (``benchmarks/bench_paged.py`` measures both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np

from infer_core.decoder.model import Decoder, block


class OutOfBlocks(RuntimeError):
    """The pool has no free block left: the caller preempts a sequence (or waits)."""


class BlockTables:
    """Block tables, reference counts and the free blocks of a pool of ``num_blocks`` blocks: bookkeeping, where
    any free block serves any sequence (the last freed is taken first). :class:`PagedKVCache`, where K and V lie
    in the blocks, chooses which one for speed."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if min(num_blocks, block_size) < 1:
            raise ValueError(f"num_blocks={num_blocks}, block_size={block_size}: each must be >= 1")
        self.block_size = block_size
        self.refs = np.zeros(num_blocks, dtype=np.int64)
        self._free = list(range(num_blocks - 1, -1, -1))  # popped from the end: block 0 first
        self._num_free = num_blocks
        self.tables: dict[int, list[int]] = {}
        self.lengths: dict[int, int] = {}
        self.copied = 0  # blocks copied on write

    @property
    def num_blocks(self) -> int:
        return len(self.refs)

    @property
    def num_free(self) -> int:
        return self._num_free

    def blocks_for(self, tokens: int) -> int:
        """Blocks that hold ``tokens`` tokens."""
        return -(-tokens // self.block_size)

    def _take(self, after: int | None) -> int:
        """Which free block a sequence whose last block is ``after`` (None: it has none) gets: here, any."""
        return self._free.pop()

    def _release(self, block: int) -> None:
        self._free.append(block)

    def _claim(self, after: int | None) -> int:
        if not self._num_free:
            raise OutOfBlocks(f"all {self.num_blocks} blocks of {self.block_size} tokens are in use")
        block = self._take(after)
        self._num_free -= 1
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
            copy = (table[-1], self._claim(table[-2] if len(table) > 1 else None))
            self.refs[copy[0]] -= 1
            table[-1] = copy[1]
            self.copied += 1
        while len(table) < self.blocks_for(start + t):
            table.append(self._claim(table[-1] if table else None))
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
                self._release(block)
                self._num_free += 1
        self.lengths[seq] = n


@dataclass
class Swapped:
    """A sequence's K and V copied out of the pool (n_layers, n_kv_heads, d_head, length): a host copy."""

    k: np.ndarray
    v: np.ndarray

    @property
    def length(self) -> int:
        return self.k.shape[3]


class PagedKVCache(BlockTables):
    """A block pool with storage: K and V of ``n_layers`` layers, (n_layers, n_kv_heads, d_head, num_blocks ·
    block_size) each, a token's K and V a column, as in the contiguous cache; block ``b`` is columns
    ``b · block_size`` … ``(b + 1) · block_size − 1``.

    Any free block still serves any sequence (no reservation, nothing wasted but the last block's tail); which one
    is taken is a matter of speed: the block right after the sequence's last one when it is free; else the start
    of the longest run of free blocks no sequence grows into (none ends right before it); else the middle of the
    longest run. So sequences grow in runs of consecutive blocks, which attention reads as one product each."""

    def __init__(self, num_blocks: int, block_size: int, n_kv_heads: int, d_head: int,
                 dtype: np.dtype | type = np.float32, n_layers: int = 1) -> None:
        super().__init__(num_blocks, block_size)
        if min(n_kv_heads, d_head, n_layers) < 1:
            raise ValueError(f"n_kv_heads={n_kv_heads}, d_head={d_head}, n_layers={n_layers}: each must be >= 1")
        shape = (n_layers, n_kv_heads, d_head, num_blocks * block_size)
        self.k, self.v = np.zeros(shape, dtype=dtype), np.zeros(shape, dtype=dtype)
        self.is_free = np.ones(num_blocks, dtype=bool)  # in place of the free list: where the free blocks lie
        self._free.clear()

    def _take(self, after: int | None) -> int:
        if after is not None and after + 1 < self.num_blocks and self.is_free[after + 1]:
            block = after + 1
        else:
            edges = np.flatnonzero(np.diff(self.is_free, prepend=False, append=False))  # free runs: starts, ends
            starts, ends = edges[::2], edges[1::2]
            tails = np.fromiter((t[-1] for t in self.tables.values() if t), dtype=np.int64)
            open_ = (starts == 0) | ~np.isin(starts - 1, tails)  # no sequence would grow into it
            if open_.any():  # the start of the longest such run
                block = int(starts[np.argmax(np.where(open_, ends - starts, -1))])
            else:  # the middle of the longest run, leaving its first half to the sequence before it
                i = int(np.argmax(ends - starts))
                block = int((starts[i] + ends[i]) // 2)
        self.is_free[block] = False
        return block

    def _release(self, block: int) -> None:
        self.is_free[block] = True

    def extend(self, seq: int, t: int) -> tuple[int, int] | None:
        copy = super().extend(seq, t)
        if copy:
            src, dst = (slice(b * self.block_size, (b + 1) * self.block_size) for b in copy)
            self.k[..., dst], self.v[..., dst] = self.k[..., src], self.v[..., src]
        return copy

    def slots(self, seq: int, start: int, end: int) -> np.ndarray:
        """Pool columns of tokens ``start`` … ``end − 1`` of ``seq``, (end − start,)."""
        pos = np.arange(start, end)
        return np.asarray(self.tables[seq], dtype=np.int64)[pos // self.block_size] * self.block_size \
            + pos % self.block_size

    def write(self, seq: int, layer: int, start: int, k: np.ndarray, v: np.ndarray) -> None:
        """Store tokens ``start`` … of ``seq`` (room made by :meth:`extend`): ``k``, ``v`` (n_kv_heads, t, d_head)."""
        slots = self.slots(seq, start, start + k.shape[1])
        self.k[layer][..., slots], self.v[layer][..., slots] = k.swapaxes(1, 2), v.swapaxes(1, 2)

    def append(self, seq: int, k: np.ndarray, v: np.ndarray) -> None:
        """Append tokens to a one-layer cache: ``k``, ``v`` (n_kv_heads, t, d_head)."""
        start = self.lengths[seq]
        self.extend(seq, k.shape[1])
        self.write(seq, 0, start, k, v)

    def contiguous(self, seq: int, layer: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """K and V of ``seq`` as copies (n_kv_heads, length, d_head): for checking."""
        slots = self.slots(seq, 0, self.lengths[seq])
        return self.k[layer][..., slots].swapaxes(1, 2), self.v[layer][..., slots].swapaxes(1, 2)

    def copy_out(self, seq: int) -> Swapped:
        """A host copy of ``seq``'s K and V, for swapping it out (the blocks stay until the caller frees them)."""
        slots = self.slots(seq, 0, self.lengths[seq])
        return Swapped(self.k[..., slots], self.v[..., slots])

    def copy_in(self, seq: int, saved: Swapped) -> None:
        """Write a host copy back into ``seq``'s blocks (room made with :meth:`extend`)."""
        slots = self.slots(seq, 0, saved.length)
        self.k[..., slots], self.v[..., slots] = saved.k, saved.v


#: Tokens of blocks no one in the product holds that a window reads rather than splitting there: a product over a
#: short run of columns is slow (its rows are short and far apart), reading a few unused columns is not.
GAP_TOKENS = 128
#: A run of blocks with the same holders at least this long gets a product of its own instead of sharing one with
#: other sequences' blocks (which would compute their queries against its columns too).
RUN_TOKENS = 256


@dataclass
class Window:
    """Pool columns ``lo`` … ``hi − 1`` read by one product, for ``members`` (indices into the batch) holding blocks
    there; ``position`` (members, hi − lo) is the token each column holds for each member, −1 if none."""

    lo: int
    hi: int
    members: np.ndarray
    position: np.ndarray


def windows(tables: list[np.ndarray], block_size: int) -> list[Window]:
    """The windows that read every block of ``tables`` (a batch's block tables) once. The pool's blocks the batch
    holds, sorted, are cut where more than :data:`GAP_TOKENS` tokens (and more than one block) of unheld blocks lie
    between two of them, and where their holders change next to a run of at least :data:`RUN_TOKENS` tokens with
    the same holders; so a long run of one sequence is one product, and blocks of sequences that grew together,
    interleaved, are one product for all of them."""
    bs = block_size
    sizes = [len(t) for t in tables]
    if not sum(sizes):
        return []
    block = np.concatenate(tables).astype(np.int64)  # (pairs,) every (sequence, block) pair of the batch
    seq = np.repeat(np.arange(len(tables)), sizes)
    index = np.arange(len(block)) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # the block's place in its table
    order = np.argsort(block, kind="stable")
    block, seq, index = block[order], seq[order], index[order]
    first = np.flatnonzero(np.diff(block, prepend=-1))  # (held,) the first pair of each distinct block
    held = block[first]
    jump = np.diff(held) - 1 > max(1, GAP_TOKENS // bs)
    cut = jump
    if len(tables) > 1:  # a key of each block's holders; runs of equal keys
        holders = np.add.reduceat((seq.astype(np.uint64) + 1) * np.uint64(0x9E3779B97F4A7C15), first)
        change = jump | (holders[1:] != holders[:-1])
        run = np.concatenate([[0], np.cumsum(change)])
        long = np.bincount(run) * bs >= RUN_TOKENS
        cut = jump | (change & (long[run[1:]] | long[run[:-1]]))
    cuts = np.flatnonzero(cut) + 1  # window boundaries, in distinct blocks
    pair_bounds = np.concatenate([[0], first[cuts], [len(block)]])
    block_bounds = np.concatenate([[0], cuts, [len(held)]])
    out = []
    for w in range(len(block_bounds) - 1):
        a, b = pair_bounds[w], pair_bounds[w + 1]
        lo, hi = int(held[block_bounds[w]]), int(held[block_bounds[w + 1] - 1]) + 1
        members, m = (np.zeros(1, dtype=np.int64), np.zeros(b - a, dtype=np.int64)) if len(tables) == 1 else \
            np.unique(seq[a:b], return_inverse=True)
        position = np.full((len(members), (hi - lo) * bs), -1, dtype=np.int64)
        position.reshape(len(members), hi - lo, bs)[m, block[a:b] - lo] = index[a:b, None] * bs + np.arange(bs)
        out.append(Window(lo * bs, hi * bs, members, position))
    return out


def reads(cache: PagedKVCache, seqs: list[int], upto: list[int]) -> list[Window]:
    """The windows (:func:`windows`) holding tokens ``0 … upto[j] − 1`` of each sequence ``seqs[j]``: the same for
    every layer, so a model's step plans them once."""
    return windows([np.asarray(cache.tables[s][:cache.blocks_for(n)]) for s, n in zip(seqs, upto, strict=True)],
                   cache.block_size)


def batch_attention(cache: PagedKVCache, seqs: list[int], q: np.ndarray, upto: list[int], layer: int = 0,
                    scale: float | None = None, plan: list[Window] | None = None) -> np.ndarray:
    """Queries ``q`` (batch, n_heads, t, d_head): sequence ``seqs[j]``'s tokens ``upto[j] − t`` … ``upto[j] − 1``,
    each over that sequence's cached tokens before it (causal), read where they lie in the pool: one product per
    :func:`windows` window for every sequence holding blocks in it, other columns masked out, and each sequence's
    softmax assembled from its windows' partial ones (maximum, sum, P·V rescaled to a common maximum, as flash
    decoding combines its splits). ``scale`` defaults to 1/sqrt(d_head); ``plan``: :func:`reads` of the same
    arguments, if the caller has it. Returns (batch, n_heads, t, d_head)."""
    batch, n_heads, t, d = q.shape
    k_pool, v_pool = cache.k[layer], cache.v[layer]  # (n_kv, d, columns)
    n_kv = k_pool.shape[0]
    if len(seqs) != batch or len(upto) != batch or n_heads % n_kv:
        raise ValueError(f"q {q.shape} for {len(seqs)} sequences, {len(upto)} ends and {n_kv} KV heads: want "
                         "(batch, h, t, d), h divisible by the KV heads")
    for seq, n in zip(seqs, upto, strict=True):
        if not t <= n <= cache.lengths[seq]:
            raise ValueError(f"{t} queries ending at token {n} of sequence {seq} (length {cache.lengths[seq]})")
    g = n_heads // n_kv
    rows = g * t  # query rows per sequence and KV head
    qi = q.reshape(batch, n_kv, rows, d).transpose(1, 0, 2, 3)  # (n_kv, batch, rows, d)
    if scale is None or scale != 1:
        qi = qi * q.dtype.type(1 / math.sqrt(d) if scale is None else scale)
    last = np.asarray(upto)[:, None] - t + np.arange(t)  # (batch, t) the newest key each query may see
    top = np.full((n_kv, batch, rows, 1), -np.inf, dtype=q.dtype)  # running maximum, sum and P·V
    total = np.zeros((n_kv, batch, rows, 1), dtype=q.dtype)
    acc = np.zeros((n_kv, batch, rows, d), dtype=q.dtype)
    for w in reads(cache, seqs, upto) if plan is None else plan:
        m = len(w.members)
        qw = qi[:, w.members].reshape(n_kv, m * rows, d)
        s = (qw @ k_pool[..., w.lo:w.hi]).reshape(n_kv, m, g, t, w.hi - w.lo)
        hidden = (w.position[:, None, :] < 0) | (w.position[:, None, :] > last[w.members][:, :, None])
        s += np.where(hidden, -np.inf, 0).astype(q.dtype)[:, None]  # (m, 1, t, columns)
        s = s.reshape(n_kv, m * rows, w.hi - w.lo)
        mx = s.max(axis=-1, keepdims=True)  # −inf where a query sees none of the window's columns
        np.subtract(s, np.where(mx > -np.inf, mx, 0), out=s)
        np.exp(s, out=s)
        o = (s @ v_pool[..., w.lo:w.hi].swapaxes(-1, -2)).reshape(n_kv, m, rows, d)  # one product for all members
        mx, total_w = mx.reshape(n_kv, m, rows, 1), s.sum(axis=-1).reshape(n_kv, m, rows, 1)
        new = np.maximum(top[:, w.members], mx)
        base = np.where(new > -np.inf, new, 0)
        old, here = np.exp(top[:, w.members] - base), np.exp(mx - base)
        acc[:, w.members] = acc[:, w.members] * old + o * here
        total[:, w.members] = total[:, w.members] * old + total_w * here
        top[:, w.members] = new
    acc /= total
    return acc.reshape(n_kv, batch, g, t, d).transpose(1, 0, 2, 3, 4).reshape(batch, n_heads, t, d)


def paged_attention(cache: PagedKVCache, seq: int, q: np.ndarray, layer: int = 0, scale: float | None = None,
                    upto: int | None = None) -> np.ndarray:
    """Queries ``q`` (n_heads, t, d_head) of tokens ``upto − t`` … ``upto − 1`` of ``seq`` (``upto``: its length by
    default) over its cached tokens before ``upto`` (causal: query i sees keys up to upto − t + i), through its block
    table (:func:`batch_attention` of one sequence). Returns (n_heads, t, d_head)."""
    n = cache.lengths[seq] if upto is None else upto
    return batch_attention(cache, [seq], q[None], [n], layer, scale)[0]


def paged_decode_attention(cache: PagedKVCache, seqs: list[int], q: np.ndarray, layer: int = 0,
                           scale: float | None = None) -> np.ndarray:
    """One query per sequence (``q`` (batch, n_heads, d_head)) over each sequence's cached tokens, through the block
    tables (:func:`batch_attention`: blocks of sequences that grew together are read once for all of them).
    Returns (batch, n_heads, d_head)."""
    if q.ndim != 3:
        raise ValueError(f"q {q.shape}: want (batch, n_heads, d_head)")
    return batch_attention(cache, seqs, q[:, :, None], [cache.lengths[s] for s in seqs], layer, scale)[:, :, 0]


def paged_forward(model: Decoder, x: np.ndarray, cache: PagedKVCache, seq: int, start: int | None = None
                  ) -> np.ndarray:
    """Tokens ``start`` … ``start + t − 1`` of ``seq`` (room made with :meth:`PagedKVCache.extend`; by default its
    last ``t``) through the blocks of ``model``: ``x`` (t, d_model) in, hidden states (t, d_model) out; their K and
    V land in the cache. A whole prompt, a chunk of one, or one token: each attends to every token before it."""
    s = model.shape
    t, d = x.shape
    start = cache.lengths[seq] - t if start is None else start
    plan = reads(cache, [seq], [start + t])

    def attention(i: int, qkv: np.ndarray) -> np.ndarray:  # qkv: (t, d + 2 d_kv)
        k = qkv[:, d:d + s.d_kv].reshape(t, s.n_kv_heads, s.d_head).transpose(1, 0, 2)
        v = qkv[:, d + s.d_kv:].reshape(t, s.n_kv_heads, s.d_head).transpose(1, 0, 2)
        cache.write(seq, i, start, k, v)
        q = qkv[:, :d].reshape(t, s.n_heads, s.d_head).transpose(1, 0, 2)
        o = batch_attention(cache, [seq], q[None], [start + t], i, 1.0, plan)[0]  # the scale is in w_qkv
        return o.transpose(1, 0, 2).reshape(t, d)

    for i, layer in enumerate(model.layers):
        x = block(layer, x, partial(attention, i))
    return x


def paged_decode_step(model: Decoder, x: np.ndarray, cache: PagedKVCache, seqs: list[int]) -> np.ndarray:
    """One token per sequence, batched: ``x`` (batch, d_model) is the newest token of each of ``seqs`` (room made
    with :meth:`PagedKVCache.extend`); projections and attention (:func:`batch_attention`, its windows planned once
    for every layer) run once for the batch. Returns (batch, d_model)."""
    s = model.shape
    b, d = x.shape
    ends = [cache.lengths[seq] for seq in seqs]
    slots = np.concatenate([cache.slots(seq, n - 1, n) for seq, n in zip(seqs, ends, strict=True)])
    plan = reads(cache, seqs, ends)

    def attention(i: int, qkv: np.ndarray) -> np.ndarray:  # qkv: (B, d + 2 d_kv)
        cache.k[i][..., slots] = qkv[:, d:d + s.d_kv].reshape(b, s.n_kv_heads, s.d_head).transpose(1, 2, 0)
        cache.v[i][..., slots] = qkv[:, d + s.d_kv:].reshape(b, s.n_kv_heads, s.d_head).transpose(1, 2, 0)
        q = qkv[:, :d].reshape(b, s.n_heads, 1, s.d_head)
        return batch_attention(cache, seqs, q, ends, i, 1.0, plan).reshape(b, d)  # the scale is in w_qkv

    for i, layer in enumerate(model.layers):
        x = block(layer, x, partial(attention, i))
    return x
