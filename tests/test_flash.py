"""FlashAttention and flash-decoding in NumPy: equal to the dense form within rounding for any shape,
block size, offset and head grouping; finite where the scores approach float32's limit; and the
slow-memory traffic they count equal to its closed form, scaling as the paper says."""

from __future__ import annotations

import numpy as np
import pytest

from infer_core.decoder.attention import (
    decode_traffic,
    fast_memory,
    flash_attention,
    flash_decode,
    flash_formula,
    flash_traffic,
    naive_attention,
    naive_traffic,
)

TOL = {np.float32: 1e-5, np.float64: 1e-12}


def qkv(rng, n_heads, n_kv, n_q, n_k, d, dtype, scale=1.0):
    return (scale * rng.standard_normal((n_heads, n_q, d)).astype(dtype),
            scale * rng.standard_normal((n_kv, n_k, d)).astype(dtype),
            rng.standard_normal((n_kv, n_k, d)).astype(dtype))


def reference(q, k, v, causal, offset):
    """The dense form in float64: the truth both are held to."""
    return naive_attention(*(a.astype(np.float64) for a in (q, k, v)), causal, offset)[0]


CASES = [  # n_heads, n_kv, n_q, n_k, d, causal, offset, block_q, block_k
    (1, 1, 1, 1, 8, True, 0, 1, 1),  # N = 1
    (4, 2, 37, 37, 16, True, 0, 8, 5),  # GQA, N not a multiple of either block
    (4, 1, 10, 50, 8, True, 40, 3, 7),  # MQA, a prompt after 40 cached tokens
    (3, 3, 29, 29, 8, False, 0, 64, 100),  # blocks beyond N
    (2, 2, 64, 64, 32, True, 0, 1, 64),  # one query per block
    (6, 3, 17, 40, 4, True, 23, 4, 1),  # one key per block, offset
    (2, 1, 33, 33, 8, False, 0, 16, 16),  # not causal, GQA
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_flash_equals_the_dense_form(case, dtype):
    n_heads, n_kv, n_q, n_k, d, causal, offset, bq, bk = case
    rng = np.random.default_rng(n_q * 31 + bk)
    q, k, v = qkv(rng, n_heads, n_kv, n_q, n_k, d, dtype)
    ref = reference(q, k, v, causal, offset)
    for threads in (1, 2):
        out, _ = flash_attention(q, k, v, causal, bq, bk, offset, threads=threads)
        assert out.dtype == dtype and out.shape == (n_heads, n_q, d)
        assert np.abs(out - ref).max() <= TOL[dtype] * np.abs(ref).max()
    naive, _ = naive_attention(q, k, v, causal, offset)
    assert np.abs(naive - ref).max() <= TOL[dtype] * np.abs(ref).max()


def test_random_shapes_and_blocks_agree():
    rng = np.random.default_rng(7)
    for _ in range(25):
        n_kv = int(rng.integers(1, 3))
        n_heads = n_kv * int(rng.integers(1, 4))
        n_q = int(rng.integers(1, 70))
        offset = int(rng.integers(0, 30))
        d = int(rng.choice([4, 8, 16]))
        bq, bk = (int(x) for x in rng.integers(1, 90, 2))
        causal = bool(rng.integers(0, 2))
        q, k, v = qkv(rng, n_heads, n_kv, n_q, n_q + offset, d, np.float32)
        ref = reference(q, k, v, causal, offset)
        out, _ = flash_attention(q, k, v, causal, bq, bk, offset)
        assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max(), (n_heads, n_kv, n_q, offset, d, bq, bk, causal)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flash_decode_equals_one_query_of_the_dense_form_for_every_split(dtype):
    rng = np.random.default_rng(3)
    n_heads, n_kv, n_k, d = 4, 2, 23, 8
    q, k, v = qkv(rng, n_heads, n_kv, 1, n_k, d, dtype)
    ref = reference(q, k, v, True, n_k - 1)[:, 0]
    for n_splits in range(1, n_k + 1):
        out, t = flash_decode(q[:, 0], k, v, n_splits)
        assert np.abs(out - ref).max() <= TOL[dtype] * np.abs(ref).max(), n_splits
        assert (t.reads, t.writes) == decode_traffic(n_heads, n_k, d, n_splits)
    with pytest.raises(ValueError, match="n_splits=24 must be between 1 and the cache length 23"):
        flash_decode(q[:, 0], k, v, 24)


def test_scores_near_float32_overflow_stay_finite_and_correct():
    """Scores of about 1e37 (exp overflows beyond 88): only the running max makes this computable."""
    rng = np.random.default_rng(5)
    q, k, v = qkv(rng, 2, 1, 40, 40, 16, np.float32, scale=np.float32(3e18))
    ref = reference(q, k, v, True, 0)
    scores = np.abs(q.astype(np.float64) @ k[0].astype(np.float64).T / 4).max()
    assert 1e36 < scores < np.finfo(np.float32).max
    for bq, bk in ((8, 8), (1, 40), (40, 3)):
        out, _ = flash_attention(q, k, v, True, bq, bk)
        assert np.isfinite(out).all() and np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()
    dec, _ = flash_decode(q[:, -1], k, v, 5)
    assert np.isfinite(dec).all() and np.abs(dec - ref[:, -1]).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("n", [1, 100, 256, 1000])
@pytest.mark.parametrize("d", [16, 64])
@pytest.mark.parametrize("block", [(16, 16), (64, 32), (100, 7), (512, 512)])
@pytest.mark.parametrize("causal", [True, False])
def test_counted_traffic_equals_the_closed_form(n, d, block, causal):
    bq, bk = block
    rng = np.random.default_rng(0)
    q, k, v = qkv(rng, 2, 1, n, n, d, np.float32)
    _, t = flash_attention(q, k, v, causal, bq, bk)
    assert (t.reads, t.writes) == flash_traffic(2, n, n, d, bq, causal)
    assert t.largest == 2 * min(bq, n) * max(d, min(bk, n))  # the score block, or the Q block and accumulator
    _, tn = naive_attention(q, k, v, causal)
    assert (tn.reads, tn.writes) == naive_traffic(2, n, n, d) and tn.largest == 2 * n * n


def test_traffic_scales_as_the_paper_says():
    """Standard attention moves Θ(N·d + N²); FlashAttention Θ(N²·d²/M): N twice -> 4x, blocks twice -> about
    half, and the count stays within a constant of the formula."""
    d = 64
    reads = {(n, b): sum(flash_traffic(1, n, n, d, b, causal=False)) for n in (4096, 8192) for b in (64, 128)}
    assert reads[8192, 64] / reads[4096, 64] == pytest.approx(4, rel=0.01)
    assert reads[4096, 128] / reads[4096, 64] == pytest.approx(0.5, rel=0.02)
    for (n, b), count in reads.items():  # counted / formula = 2·M / (b·d) · (1 + b/N): a constant, as N grows
        constant = 2 * fast_memory(d, b, b) / (b * d)
        assert count / flash_formula(1, n, d, b, b) == pytest.approx(constant * (1 + b / n), rel=1e-12)
    naive = [sum(naive_traffic(1, n, n, d)) for n in (4096, 8192)]
    assert naive[1] / naive[0] == pytest.approx(4, rel=0.05)  # N² dominates
    causal = sum(flash_traffic(1, 8192, 8192, d, 64, causal=True))
    blocks = 8192 // 64  # causal: query block i reads (i + 1)·64 keys: (T + 3) / (2T + 2) of the full count
    assert causal / reads[8192, 64] == pytest.approx((blocks + 3) / (2 * blocks + 2), rel=1e-12)  # about half


def test_bad_arguments_name_the_value():
    q, k, v = qkv(np.random.default_rng(0), 3, 2, 4, 4, 8, np.float32)
    with pytest.raises(ValueError, match="h divisible by h_kv"):
        flash_attention(q, k, v)
    q, k, v = qkv(np.random.default_rng(0), 2, 1, 4, 4, 8, np.float32)
    with pytest.raises(ValueError, match="block_q=0"):
        flash_attention(q, k, v, block_q=0)
    with pytest.raises(ValueError, match="offset=3"):
        flash_attention(q, k, v, offset=3)
