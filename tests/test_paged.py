"""The paged KV cache: attention through block tables equals attention over a contiguous cache, fork shares
blocks and copies exactly one on a diverging write, freeing restores the pool, a full pool refuses cleanly."""

from __future__ import annotations

import numpy as np
import pytest

from infer_core.flash import naive_attention
from infer_core.paged import OutOfBlocks, PagedKVCache, paged_decode_attention


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
    assert cache.num_free == 40 and (cache.refs == 0).all() and sorted(cache.free_blocks) == list(range(40))


def test_a_full_pool_refuses_an_append_and_keeps_nothing_of_it():
    rng = np.random.default_rng(2)
    cache = PagedKVCache(3, 4, 1, 4)
    cache.add(0)
    cache.append(0, *tokens(rng, 1, 6, 4))
    before = (list(cache.tables[0]), cache.lengths[0], cache.num_free)
    with pytest.raises(OutOfBlocks, match="all 3 blocks of 4 tokens are in use"):
        cache.append(0, *tokens(rng, 1, 8, 4))
    assert (list(cache.tables[0]), cache.lengths[0], cache.num_free) == before
