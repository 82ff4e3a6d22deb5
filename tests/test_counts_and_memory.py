"""Exact counts: K/V projections, FLOPs and cache copies as counted vs GUIDE §6; the KV calculator."""

from __future__ import annotations

import numpy as np
import pytest

from infer_core.attention import QUERY_CHUNK, Counts, DecoderShape, init_decoder
from infer_core.decode import (
    expected_bytes_read,
    expected_cache_bytes_copied,
    expected_flops,
    expected_kv_projections,
    generate,
)
from infer_core.kv_cache import MODEL_PRESETS, Strategy, kv_cache_bytes


@pytest.mark.parametrize(
    "strategy,p,n,expected",
    [
        ("recompute", 0, 4, 10),  # 1 + 2 + 3 + 4
        ("recompute", 3, 2, 9),  # 4 + 5 = n·p + n(n+1)/2 = 6 + 3
        ("recompute", 0, 500, 125_250),
        ("concat", 3, 2, 5),
        ("prealloc", 0, 500, 500),
    ],
)
def test_projection_formula_values(strategy, p, n, expected):
    assert expected_kv_projections(strategy, p, n) == expected


@pytest.mark.parametrize("layers,batch,p,n", [(1, 1, 0, 9), (2, 2, 4, 6), (3, 1, 7, 1)])
@pytest.mark.parametrize("strategy", list(Strategy))
def test_counted_equals_formulas(strategy, layers, batch, p, n):
    shape = DecoderShape(16, 4, 2, layers, "float32")
    rng = np.random.default_rng(0)
    model = init_decoder(shape, rng)
    x = rng.standard_normal((batch, p + n, 16), dtype=np.float32)
    counts = Counts.for_layers(layers)
    generate(model, x, p, strategy, counts=counts)
    assert counts.kv_projections == [expected_kv_projections(strategy, p, n)] * layers
    assert counts.flops == expected_flops(strategy, shape, batch, p, n)
    assert counts.cache_bytes_copied == expected_cache_bytes_copied(strategy, shape, batch, p, n)
    assert counts.bytes_read == expected_bytes_read(strategy, shape, batch, p, n)


def test_flops_by_hand():
    """d=8, 1 head, 1 layer, batch 1, no prompt, 2 tokens, cached: per token the projections cost
    2·8·24 + 2·8·8 = 512; attention of token i (context i) costs 4·8·i. Total 2·512 + 32 + 64."""
    shape = DecoderShape(8, 1)
    assert expected_flops("prealloc", shape, 1, 0, 2) == 1024 + 96
    # recompute: step 1 runs 1 token (512 + 32), step 2 runs 2 tokens over 2 keys (1024 + 4·8·2·2)
    assert expected_flops("recompute", shape, 1, 0, 2) == 544 + 1024 + 128


def test_flops_past_one_query_chunk():
    """A prefill longer than QUERY_CHUNK is counted chunk by chunk, as the code runs it."""
    shape = DecoderShape(8, 2)
    p = QUERY_CHUNK + 10
    rng = np.random.default_rng(0)
    model = init_decoder(shape, rng)
    x = rng.standard_normal((1, p + 1, 8), dtype=np.float32)
    counts = Counts.for_layers(1)
    generate(model, x, p, "prealloc", counts=counts)
    attn_prefill = 4 * 8 * (QUERY_CHUNK * QUERY_CHUNK + 10 * p)
    assert counts.flops == (p + 1) * (2 * 8 * 24 + 2 * 64) + attn_prefill + 4 * 8 * (p + 1)


def test_bytes_copied_by_hand():
    """concat rewrites the cache on every append; prealloc writes each token once."""
    shape = DecoderShape(8, 2, 1, 1, "float64")  # d_kv = 4: one token's K or V is 32 bytes
    assert expected_cache_bytes_copied("prealloc", shape, 1, 0, 3) == 3 * 2 * 32
    assert expected_cache_bytes_copied("concat", shape, 1, 0, 3) == (1 + 2 + 3) * 2 * 32
    assert expected_cache_bytes_copied("recompute", shape, 1, 0, 3) == 0


def test_kv_cache_bytes_check_values():
    """GUIDE §6 check values, fp16."""
    assert MODEL_PRESETS["llama-2-7b"].kv_cache_bytes(1) == 524_288
    assert MODEL_PRESETS["llama-2-7b"].kv_cache_bytes(4096) == 2 * 2**30
    assert MODEL_PRESETS["llama-3-8b"].kv_cache_bytes(1) == 131_072
    assert MODEL_PRESETS["qwen2.5-0.5b"].kv_cache_bytes(1) == 12_288
    assert MODEL_PRESETS["opt-13b"].kv_cache_bytes(1) == 819_200  # the vLLM paper's "800 KB"
    assert kv_cache_bytes(32, 8, 128, seq_len=10, batch=3, bytes_per_element=4) == 2 * 32 * 8 * 128 * 30 * 4


def test_kv_cache_bytes_matches_the_real_buffers():
    from infer_core.decode import make_cache

    shape = DecoderShape(32, 4, 2, 3, "float32")
    cache = make_cache("prealloc", shape, batch=2, max_len=11)
    assert cache.kv.nbytes == kv_cache_bytes(3, 2, 8, 11, 2, 4)


def test_bytes_read_by_hand():
    """d=8, 1 head, 1 layer, float32: weights are (8·24 + 8·8)·4 = 1024 B, one position's K and V
    64 B. Two cached steps read the weights twice and 1 then 2 positions: 2048 + 64·3."""
    shape = DecoderShape(8, 1)
    assert expected_bytes_read("prealloc", shape, 1, 0, 2) == 2048 + 64 * 3
    assert expected_bytes_read("recompute", shape, 1, 0, 2) == 2048 + 64 * (1 + 2)
