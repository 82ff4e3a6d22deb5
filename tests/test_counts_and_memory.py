"""Counts the KV experiment reports: observed (tokens projected, bytes the cache wrote) against the
closed-form formulas, the formulas against hand values and direct sums over positions; the KV calculator."""

from __future__ import annotations

import numpy as np
import pytest

from infer_core.decoder.decode import (
    GenerationCounts,
    expected_bytes_moved,
    expected_cache_bytes_copied,
    expected_flops,
    expected_kv_projections,
    generate,
    make_cache,
)
from infer_core.decoder.kv_cache import Strategy, kv_cache_bytes
from infer_core.decoder.model import QUERY_CHUNK, DecoderShape, init_decoder
from infer_core.model.shapes import PRESETS


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


@pytest.mark.parametrize("layers,batch,p,n", [(1, 1, 0, 9), (2, 2, 4, 6), (3, 1, 7, 1), (1, 1, QUERY_CHUNK + 3, 2)])
@pytest.mark.parametrize("strategy", list(Strategy))
def test_observed_counts_equal_the_closed_forms(strategy, layers, batch, p, n):
    shape = DecoderShape(16, 4, 2, layers, "float32")
    rng = np.random.default_rng(0)
    model = init_decoder(shape, rng)
    x = rng.standard_normal((batch, p + n, 16), dtype=np.float32)
    counts = GenerationCounts()
    generate(model, x, p, strategy, counts=counts)
    assert counts.kv_projections == expected_kv_projections(strategy, p, n)
    assert counts.cache_bytes_written == expected_cache_bytes_copied(strategy, shape, batch, p, n)


def direct_flops(strategy: str, d: int, d_kv: int, p: int, n: int) -> int:
    """Useful FLOPs summed position by position: a token's projections, 4·d per attended key."""
    proj = 2 * d * (d + 2 * d_kv) + 2 * d * d
    if strategy == "recompute":  # step t is a causal pass over tokens 1..t
        return sum(sum(proj + 4 * d * j for j in range(1, t + 1)) for t in range(p + 1, p + n + 1))
    prefill = sum(proj + 4 * d * j for j in range(1, p + 1))
    return prefill + sum(proj + 4 * d * t for t in range(p + 1, p + n + 1))


@pytest.mark.parametrize("strategy", list(Strategy))
@pytest.mark.parametrize("p,n", [(0, 1), (0, 7), (5, 3), (QUERY_CHUNK + 10, 4)])
def test_flops_closed_form_equals_the_direct_sum(strategy, p, n):
    shape = DecoderShape(16, 4, 2, 3, "float32")
    per_sequence = direct_flops(strategy.value, 16, shape.d_kv, p, n)
    assert expected_flops(strategy, shape, 2, p, n) == 2 * 3 * per_sequence


def test_flops_by_hand():
    """d=8, 1 head, 1 layer, batch 1, no prompt, 2 tokens. A token's projections cost 2·8·24 + 2·8·8 = 512;
    attending to t keys costs 4·8·t. Cached: 2·512 + 32 + 64. Recompute: step 1 is one token (512 + 32),
    step 2 two tokens over 1 and 2 keys (1024 + 32 + 64)."""
    shape = DecoderShape(8, 1)
    assert expected_flops("prealloc", shape, 1, 0, 2) == 1024 + 96
    assert expected_flops("recompute", shape, 1, 0, 2) == 544 + 1120


def test_bytes_copied_by_hand():
    """concat rewrites the cache on every append; prealloc writes each token once."""
    shape = DecoderShape(8, 2, 1, 1, "float64")  # d_kv = 4: one token's K or V is 32 bytes
    assert expected_cache_bytes_copied("prealloc", shape, 1, 0, 3) == 3 * 2 * 32
    assert expected_cache_bytes_copied("concat", shape, 1, 0, 3) == (1 + 2 + 3) * 2 * 32
    assert expected_cache_bytes_copied("concat", shape, 1, 2, 2) == (2 + 3 + 4) * 2 * 32  # prompt, then 3 and 4
    assert expected_cache_bytes_copied("recompute", shape, 1, 0, 3) == 0


def test_bytes_moved_by_hand():
    """d=8, 1 head, 1 layer, float32: weights are (8·24 + 8·8)·4 = 1024 B, one position's K and V 64 B.
    Two cached steps read the weights twice and 1 then 2 positions, and write 2 positions (128 B);
    a 3-token prompt adds one prefill call: the weights and 3 positions, and writes 3 positions."""
    shape = DecoderShape(8, 1)
    assert expected_bytes_moved("prealloc", shape, 1, 0, 2) == 2048 + 64 * 3 + 128
    assert expected_bytes_moved("recompute", shape, 1, 0, 2) == 2048 + 64 * (1 + 2)
    assert expected_bytes_moved("prealloc", shape, 1, 3, 1) == 1024 + 64 * 3 + 1024 + 64 * 4 + 64 * 4


def test_kv_cache_bytes_check_values():
    """fp16 KV bytes per token of published models (2 × layers × KV heads × head dim × 2 B)."""
    assert PRESETS["llama-2-7b"].kv_cache_bytes(1) == 524_288
    assert PRESETS["llama-2-7b"].kv_cache_bytes(4096) == 2 * 2**30
    assert PRESETS["llama-3-8b"].kv_cache_bytes(1) == 131_072
    assert PRESETS["qwen2.5-0.5b"].kv_cache_bytes(1) == 12_288
    assert kv_cache_bytes(40, 40, 128, 1) == 819_200  # OPT-13B: the vLLM paper's "800 KB"
    assert kv_cache_bytes(32, 8, 128, seq_len=10, batch=3, bytes_per_element=4) == 2 * 32 * 8 * 128 * 30 * 4


def test_kv_cache_bytes_matches_the_real_buffers():
    shape = DecoderShape(32, 4, 2, 3, "float32")
    cache = make_cache("prealloc", shape, batch=2, max_len=11)
    assert cache.kv.nbytes == kv_cache_bytes(3, 2, 8, 11, 2, 4)
