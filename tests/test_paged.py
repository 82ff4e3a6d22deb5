"""The paged KV cache: attention through block tables equals attention over a contiguous cache, fork shares
blocks and copies exactly one on a diverging write, freeing restores the pool, a full pool refuses cleanly;
the engine loop over it: prefill and batched decode equal one causal pass, preemption loses no request, and
static and continuous batching schedule as they are defined."""

from __future__ import annotations

import numpy as np
import pytest

from infer_core.decoder.attention import naive_attention
from infer_core.decoder.model import DecoderShape, forward, init_decoder
from infer_core.serving.executors import CostModel, NumpyExecutor
from infer_core.serving.paged import (
    GAP_TOKENS,
    BlockTables,
    OutOfBlocks,
    PagedKVCache,
    paged_decode_attention,
    paged_decode_step,
    paged_forward,
    windows,
)
from infer_core.serving.scheduler import Policy, Preempt, run_trace


def tokens(rng, n_kv, t, d):
    return rng.standard_normal((n_kv, t, d), dtype=np.float32), rng.standard_normal((n_kv, t, d), dtype=np.float32)


@pytest.mark.parametrize("block_size", [1, 16, 128])
def test_paged_attention_equals_contiguous_on_a_ragged_batch(block_size):
    rng = np.random.default_rng(block_size)
    n_heads, n_kv, d = 8, 2, 32
    lengths = [1, 17, 300, 128]
    cache = PagedKVCache(sum(-(-n // block_size) for n in lengths) + 3, block_size, n_kv, d)
    contiguous = []
    for seq, n in enumerate(lengths):
        cache.add(seq)
        k, v = tokens(rng, n_kv, n, d)
        for a in range(0, n, 7):  # appended in pieces that straddle block boundaries
            cache.append(seq, k[:, a:a + 7], v[:, a:a + 7])
        contiguous.append((k, v))
        assert np.array_equal(cache.contiguous(seq)[0], k) and len(cache.tables[seq]) == -(-n // block_size)
    q = rng.standard_normal((len(lengths), n_heads, d), dtype=np.float32)
    out = paged_decode_attention(cache, list(range(len(lengths))), q)
    for i, (k, v) in enumerate(contiguous):
        ref, _ = naive_attention(q[i][:, None], k, v, causal=False)
        assert np.abs(out[i] - ref[:, 0]).max() <= 1e-6 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize(("prompt", "copies"), [(20, 1), (32, 0)])
def test_fork_shares_the_prompt_and_a_diverging_append_copies_exactly_one_block(prompt, copies):
    """A prompt of 20 tokens in blocks of 16 ends in a half-full shared block: the first write copies it
    (once; the other owner then holds it alone). A prompt of 32 fills its blocks: nothing is copied."""
    rng = np.random.default_rng(0)
    cache = PagedKVCache(10, 16, 2, 8)
    cache.add(0)
    cache.append(0, *tokens(rng, 2, prompt, 8))
    used = 10 - cache.num_free
    cache.fork(0, 1)
    assert cache.num_free == 10 - used and cache.tables[1] == cache.tables[0]  # shared, nothing new
    a, b = tokens(rng, 2, 1, 8), tokens(rng, 2, 1, 8)
    cache.append(0, *a)
    cache.append(1, *b)
    assert cache.copied == copies
    assert cache.tables[0][:-1] == cache.tables[1][:-1] and cache.tables[0][-1] != cache.tables[1][-1]
    k0, _ = cache.contiguous(0)
    k1, _ = cache.contiguous(1)
    assert np.array_equal(k0[:, :prompt], k1[:, :prompt])  # the prompt, kept for both
    assert np.array_equal(k0[:, prompt:], a[0]) and np.array_equal(k1[:, prompt:], b[0])


def test_freeing_every_sequence_restores_the_pool():
    rng = np.random.default_rng(1)
    cache = PagedKVCache(40, 4, 1, 4)
    cache.add(0)
    cache.append(0, *tokens(rng, 1, 10, 4))
    for child in (1, 2, 3):
        cache.fork(0, child)
        cache.append(child, *tokens(rng, 1, child * 3, 4))
    assert cache.num_free < 40
    for seq in (2, 0, 3, 1):
        cache.free(seq)
    assert cache.num_free == 40 and (cache.refs == 0).all() and cache.is_free.all()


def test_a_full_pool_refuses_an_append_and_keeps_nothing_of_it():
    rng = np.random.default_rng(2)
    cache = PagedKVCache(3, 4, 1, 4)
    cache.add(0)
    cache.append(0, *tokens(rng, 1, 6, 4))
    before = (list(cache.tables[0]), cache.lengths[0], cache.num_free)
    with pytest.raises(OutOfBlocks, match="all 3 blocks of 4 tokens are in use"):
        cache.append(0, *tokens(rng, 1, 8, 4))
    assert (list(cache.tables[0]), cache.lengths[0], cache.num_free) == before


def with_holes(cache, holes):
    """Fill ``cache`` with one-block idle sequences (ids from 10,000), then free those on the blocks ``holes``:
    what a sequence takes next lies in those holes, as in a full pool after churn."""
    for i in range(cache.num_blocks):
        cache.add(10_000 + i)
        cache.extend(10_000 + i, 1)
    for seq, table in list(cache.tables.items()):
        if table[0] in set(holes):
            cache.free(seq)


@pytest.mark.parametrize("block_size", [1, 16])
@pytest.mark.parametrize("layout", ["interleaved", "far apart"])
def test_paged_attention_reads_interleaved_and_far_apart_blocks_exactly(block_size, layout):
    """Interleaved: three sequences grow by turns into every other block of a full pool, so their blocks alternate
    and one product serves them all (each masks the others' columns). Far apart: holes of 64 tokens separated by
    more than GAP_TOKENS tokens of idle blocks, so each sequence needs several products, assembled by their maxima
    and sums. Either way each result equals attention over the sequence's own K and V, with GQA."""
    rng = np.random.default_rng(block_size)
    n_heads, n_kv, d, lengths = 8, 2, 16, [40, 70, 53]
    blocks = sum(-(-n // block_size) for n in lengths) + 3
    if layout == "interleaved":
        cache = PagedKVCache(2 * blocks, block_size, n_kv, d)
        with_holes(cache, range(0, 2 * blocks, 2))
    else:
        run = 64 // block_size  # holes of 64 tokens, more than GAP_TOKENS apart
        step = run + GAP_TOKENS // block_size + 2
        pool = -(-blocks // run) * step
        cache = PagedKVCache(pool, block_size, n_kv, d)
        with_holes(cache, [b for b in range(pool) if b % step < run])
    kv = [tokens(rng, n_kv, n, d) for n in lengths]
    for seq in range(3):
        cache.add(seq)
    for a in range(0, max(lengths), 5):  # by turns, five tokens at a time
        for seq, (k, v) in enumerate(kv):
            if a < lengths[seq]:
                cache.append(seq, k[:, a:a + 5], v[:, a:a + 5])
    for seq, (k, v) in enumerate(kv):
        assert np.array_equal(cache.contiguous(seq)[0], k) and np.array_equal(cache.contiguous(seq)[1], v)
    products = windows([np.asarray(cache.tables[s]) for s in range(3)], block_size)
    if layout == "interleaved":
        assert max(len(w.members) for w in products) == 3
    else:
        assert len(products) >= 3 and all(w.hi - w.lo <= 64 for w in products)  # none reads across a gap
    q = rng.standard_normal((3, n_heads, d), dtype=np.float32)
    out = paged_decode_attention(cache, [0, 1, 2], q)
    for i, (k, v) in enumerate(kv):
        ref, _ = naive_attention(q[i][:, None], np.repeat(k, 4, axis=0), np.repeat(v, 4, axis=0), causal=False)
        assert np.abs(out[i] - ref[:, 0]).max() <= 1e-6 * max(1.0, np.abs(ref).max())


def test_windows_read_every_held_block_once_and_give_a_long_run_its_own_product():
    """Blocks 0–19 of sequence 0 (a run of 320 tokens >= RUN_TOKENS), then 20–27 alternating between
    sequences 1 and 2, then a gap of 100 blocks, then sequence 0's block 128: three products."""
    tables = [np.r_[0:20, 128], np.arange(20, 28, 2), np.arange(21, 28, 2)]
    got = windows(tables, 16)
    assert [(w.lo // 16, w.hi // 16, list(w.members)) for w in got] == [(0, 20, [0]), (20, 28, [1, 2]),
                                                                      (128, 129, [0])]
    assert got[1].position[0, :16].tolist() == list(range(16)) and (got[1].position[0, 16:32] == -1).all()
    assert got[2].position[0, 0] == 20 * 16  # block 128 holds sequence 0's 21st block


def test_a_sequence_grows_in_runs_the_allocator_keeps_apart():
    """Each sequence extends into the block after its last; a new one starts where no sequence grows into."""
    tables = PagedKVCache(64, 4, 1, 1)
    for seq in range(3):
        tables.add(seq)
    for _ in range(8):
        for seq in range(3):
            tables.extend(seq, 4)
    for seq in range(3):
        t = tables.tables[seq]
        assert t == list(range(t[0], t[0] + 8))  # one run each, though they grew by turns


def small_model(d_ffn=48, layers=2):
    return init_decoder(DecoderShape(32, 4, 2, layers, d_ffn=d_ffn), np.random.default_rng(3))


def test_prefill_in_chunks_then_batched_decode_equals_one_causal_pass():
    """Through blocks of 5 (every piece straddles a boundary), with GQA and a feed-forward in each block."""
    model, rng = small_model(), np.random.default_rng(4)
    lengths, gen = [3, 11, 17], 6
    xs = [rng.standard_normal((n + gen, 32), dtype=np.float32) for n in lengths]
    cache = PagedKVCache(40, 5, 2, 8, n_layers=2)
    outs = [[] for _ in lengths]
    for i, (n, x) in enumerate(zip(lengths, xs, strict=True)):
        cache.add(i)
        cache.extend(i, n)
        for a in range(0, n, 4):  # chunked prefill: 4 tokens at a time
            outs[i].append(paged_forward(model, x[a:min(n, a + 4)], cache, i, start=a))
    for t in range(gen):
        for i in range(3):
            cache.extend(i, 1)
        h = paged_decode_step(model, np.stack([x[n + t] for n, x in zip(lengths, xs, strict=True)]), cache, [0, 1, 2])
        for i in range(3):
            outs[i].append(h[i:i + 1])
    for i, x in enumerate(xs):
        ref = forward(model, x[None])[0]
        assert np.abs(np.concatenate(outs[i]) - ref).max() <= 1e-5 * np.abs(ref).max()


def test_chunked_prefill_over_far_apart_runs_equals_one_causal_pass():
    """Blocks of 2 tokens in holes of two blocks, each more than GAP_TOKENS tokens from the next: a chunk's early
    queries see none of a later window's columns (a window they must skip), yet prefill in chunks of 7 and decode
    equal one causal pass."""
    model, rng = small_model(), np.random.default_rng(6)
    step = 2 + GAP_TOKENS // 2 + 2
    cache = PagedKVCache(12 * step, 2, 2, 8, n_layers=2)
    with_holes(cache, [b for b in range(12 * step) if b % step < 2])
    x = rng.standard_normal((22, 32), dtype=np.float32)
    cache.add(0)
    cache.extend(0, 18)
    assert len(windows([np.asarray(cache.tables[0])], 2)) >= 6  # a window per two to four tokens
    outs = [paged_forward(model, x[a:b], cache, 0, start=a) for a, b in ((0, 7), (7, 14), (14, 18))]
    for t in range(18, 22):
        cache.extend(0, 1)
        outs.append(paged_decode_step(model, x[t:t + 1], cache, [0]))
    ref = forward(model, x[None])[0]
    got = np.concatenate(outs)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


def trace(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.zeros(n), rng.integers(3, 12, n), rng.integers(1, 14, n)


@pytest.mark.parametrize("preempt", [Preempt.recompute, Preempt.swap])
@pytest.mark.parametrize("policy", [Policy.continuous, Policy.static])
def test_a_tight_block_budget_preempts_and_loses_no_request(policy, preempt):
    """12 blocks of 4 tokens for up to 6 requests of up to 25 tokens: blocks run out, requests are preempted,
    and still every request finishes exactly once with outputs equal to one causal pass over its tokens."""
    model = small_model()
    arrival, prompt, output = trace(10)
    cache = PagedKVCache(12, 4, 2, 8, n_layers=2)
    ex = NumpyExecutor(model, cache, seed=5, check=frozenset(range(10)))
    out = run_trace(arrival, prompt, output, cache, ex, policy, max_batch=6, preempt=preempt, swap_blocks=6)
    assert out.preemptions > 0 and (out.swaps > 0) == (preempt is Preempt.swap)
    assert [r.generated for r in out.requests] == list(output)  # each token produced once
    assert all(r.finish >= r.first_token >= r.arrival for r in out.requests)
    assert ex.check(out.requests) <= 1e-5
    assert cache.num_free == 12 and not cache.tables and out.host_blocks == 0  # every block back, nothing swapped


def test_static_batching_waits_for_the_longest_and_continuous_refills_on_a_unit_cost():
    """One unit of time per iteration: the schedule is exact. Outputs 1, 4, 2 tokens, batches of 2."""
    unit = CostModel(np.array([1.0, 0, 0, 0, 0, 0, 0]))
    arrival, prompt, output = np.zeros(3), np.array([4, 4, 4]), np.array([1, 4, 2])
    static = run_trace(arrival, prompt, output, BlockTables(10, 4), unit, Policy.static, max_batch=2)
    # requests 0 and 1 prefill at t=1 (0 is done); 1 decodes t=2..4; request 2 starts after: prefill 5, decode 6
    assert [(r.first_token, r.finish) for r in static.requests] == [(1, 1), (1, 4), (5, 6)]
    assert static.batch_sizes == [0, 2, 2, 2, 0, 1]  # request 0 stays as a padding row until the batch ends
    unit.now = 0.0
    cont = run_trace(arrival, prompt, output, BlockTables(10, 4), unit, Policy.continuous, max_batch=2)
    assert [(r.first_token, r.finish) for r in cont.requests] == [(1, 1), (1, 4), (2, 3)]  # 2 joins at once
    assert cont.batch_sizes == [0, 1, 2, 1]
