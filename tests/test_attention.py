"""The decoder and its cache strategies: same outputs, checked against a naive per-head loop."""

from __future__ import annotations

import numpy as np
import pytest

from infer_core.decoder.decode import generate, make_cache, reference_outputs
from infer_core.decoder.kv_cache import ConcatCache, PreallocCache, Strategy
from infer_core.decoder.model import (
    DecoderShape,
    attend,
    causal_attention,
    decode_step,
    forward,
    init_decoder,
    rms_norm,
)

# float32 outputs are O(1) and pass through a few dozen roundings: 1e-4 is ~1000 ulp of 1.0.
ATOL = {"float32": 1e-4, "float64": 1e-11}


def naive_forward(model, x: np.ndarray) -> np.ndarray:
    """Reference written the slow, obvious way: loops over batch, heads and positions, float64."""
    s = model.shape
    x = x.astype(np.float64)
    b, t, d = x.shape
    for layer in model.layers:
        w_qkv, w_o = layer.w_qkv.astype(np.float64), layer.w_o.astype(np.float64)
        h = x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-5)
        qkv = h @ w_qkv
        q, k, v = qkv[..., :d], qkv[..., d : d + s.d_kv], qkv[..., d + s.d_kv :]
        o = np.zeros_like(x)
        for bi in range(b):
            for head in range(s.n_heads):
                kvh = head // (s.n_heads // s.n_kv_heads)  # GQA: query head h reads KV head h // group
                qh = q[bi, :, head * s.d_head : (head + 1) * s.d_head]
                kh = k[bi, :, kvh * s.d_head : (kvh + 1) * s.d_head]
                vh = v[bi, :, kvh * s.d_head : (kvh + 1) * s.d_head]
                for i in range(t):
                    scores = kh[: i + 1] @ qh[i]  # 1/sqrt(d_head) is folded into W_q by init_decoder
                    p = np.exp(scores - scores.max())
                    o[bi, i, head * s.d_head : (head + 1) * s.d_head] = (p / p.sum()) @ vh[: i + 1]
        x = x + o @ w_o
    return x


CASES = [
    # d_model, n_heads, n_kv_heads, n_layers, batch, prompt_len, seq_len
    pytest.param(32, 4, None, 1, 1, 0, 12, id="mha"),
    pytest.param(32, 4, 2, 2, 1, 0, 10, id="gqa"),
    pytest.param(32, 8, 1, 1, 1, 0, 9, id="mqa"),
    pytest.param(24, 3, None, 3, 3, 0, 7, id="batch3-layers3"),
    pytest.param(32, 4, 2, 2, 2, 5, 8, id="gqa-batch2-prompt5"),
]


def build(d, h, hkv, layers, batch, p, n, dtype, seed=0):
    shape = DecoderShape(d, h, hkv, layers, dtype)
    rng = np.random.default_rng(seed)
    model = init_decoder(shape, rng)
    x = rng.standard_normal((batch, p + n, d), dtype=np.dtype(dtype))
    return model, x


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("d,h,hkv,layers,batch,p,n", CASES)
def test_strategies_give_the_same_outputs(d, h, hkv, layers, batch, p, n, dtype):
    model, x = build(d, h, hkv, layers, batch, p, n, dtype)
    naive = naive_forward(model, x)[:, p:]
    np.testing.assert_allclose(reference_outputs(model, x, p), naive, rtol=0, atol=1e-12)
    outs = {s: generate(model, x, p, s) for s in Strategy}
    for s, y in outs.items():
        assert y.shape == (batch, n, d) and y.dtype == np.dtype(dtype)
        np.testing.assert_allclose(y, naive, rtol=0, atol=ATOL[dtype], err_msg=s.value)
    for s in (Strategy.concat, Strategy.prealloc):
        np.testing.assert_allclose(outs[s], outs[Strategy.recompute], rtol=0, atol=ATOL[dtype])


def test_gqa_query_head_reads_kv_head_h_div_group():
    """causal_attention against single-head attention of query head h over KV head h // group."""
    rng = np.random.default_rng(1)
    b, hkv, g, t, dh = 2, 2, 3, 5, 4
    q = rng.standard_normal((b, hkv, g, t, dh))
    k, v = rng.standard_normal((b, hkv, t, dh)), rng.standard_normal((b, hkv, t, dh))
    out = causal_attention(q, k.swapaxes(-1, -2), v.swapaxes(-1, -2), offset=0)  # caches hold K^T, V^T
    flat_q = q.reshape(b, hkv * g, t, dh)  # query head h = kv * g + j
    for h in range(hkv * g):
        kv = h // g
        scores = flat_q[:, h] @ k[:, kv].swapaxes(-1, -2)  # (b, t, t)
        scores[:, np.triu_indices(t, 1)[0], np.triu_indices(t, 1)[1]] = -np.inf
        p = np.exp(scores - scores.max(-1, keepdims=True))
        expected = (p / p.sum(-1, keepdims=True)) @ v[:, kv]
        np.testing.assert_allclose(out.reshape(b, hkv * g, t, dh)[:, h], expected, rtol=0, atol=1e-12)


def test_recompute_keeps_the_long_prompt_exact_beyond_one_query_chunk():
    """A prompt longer than QUERY_CHUNK exercises the chunked causal pass and its mask."""
    model, x = build(16, 2, None, 1, 1, 300, 3, "float64")
    naive = naive_forward(model, x)
    np.testing.assert_allclose(forward(model, x), naive, rtol=0, atol=1e-11)
    for s in Strategy:
        np.testing.assert_allclose(generate(model, x, 300, s), naive[:, 300:], rtol=0, atol=1e-11)


def test_prealloc_cache_reuse_and_overflow():
    model, x = build(16, 2, None, 2, 1, 2, 4, "float32")
    cache = make_cache("prealloc", model.shape, 1, 6)
    first = generate(model, x, 2, "prealloc", cache=cache)
    second = generate(model, x, 2, "prealloc", cache=cache)  # reset, not reallocated
    np.testing.assert_array_equal(first, second)
    assert isinstance(cache, PreallocCache) and cache.kv.shape == (2, 1, 2, 2, 8, 6)
    with pytest.raises(ValueError, match="holds 6 tokens"):
        cache.append(0, np.zeros((1, 2 * 2 * 8, 1), np.float32))  # one token: keys and values of 2 heads


def test_rms_norm_and_shape_validation():
    x = np.array([[3.0, 4.0]])
    np.testing.assert_allclose(rms_norm(x), x / np.sqrt(12.5 + 1e-5))
    with pytest.raises(ValueError, match="d_model=60 must be divisible by n_heads=8"):
        DecoderShape(60, 8)
    with pytest.raises(ValueError, match="n_heads=8 must be divisible by n_kv_heads=3"):
        DecoderShape(64, 8, 3)
    with pytest.raises(ValueError, match="dtype=float16"):
        DecoderShape(64, 8, dtype="float16")


def test_same_seed_same_weights_and_outputs():
    a, xa = build(16, 2, None, 1, 1, 0, 4, "float32", seed=7)
    b, xb = build(16, 2, None, 1, 1, 0, 4, "float32", seed=7)
    c, _ = build(16, 2, None, 1, 1, 0, 4, "float32", seed=8)
    np.testing.assert_array_equal(a.layers[0].w_qkv, b.layers[0].w_qkv)
    np.testing.assert_array_equal(xa, xb)
    assert not np.array_equal(a.layers[0].w_qkv, c.layers[0].w_qkv)


def test_attend_is_softmax_then_pv_with_masked_keys():
    """Normalizing after the product with V gives softmax(e) @ V; -inf scores get weight 0."""
    rng = np.random.default_rng(3)
    e = rng.standard_normal((2, 3, 5, 7)) * 4
    e[..., 0, 4:] = -np.inf  # a query that sees only the first 4 keys
    vt = rng.standard_normal((2, 3, 6, 7))  # V transposed: (d_head, L)
    p = np.exp(e - e.max(-1, keepdims=True))
    expected = (p / p.sum(-1, keepdims=True)) @ vt.swapaxes(-1, -2)
    np.testing.assert_allclose(attend(e.copy(), vt), expected, rtol=0, atol=1e-14)
    first = p[..., :1, :4] / p[..., :1, :4].sum(-1, keepdims=True)  # over the keys it sees only
    seen = first @ vt[..., :4].swapaxes(-1, -2)
    np.testing.assert_allclose(attend(e.copy(), vt)[..., :1, :], seen, rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rms_norm_of_one_vector_matches_the_batched_path(dtype):
    """One vector takes the Python-float scale; rows of a batch the array path: same values
    within a few ulp (the scale is rounded once in float64 instead of three times in dtype)."""
    x = np.random.default_rng(4).standard_normal((3, 64)).astype(dtype)
    one = np.stack([rms_norm(row[None])[0] for row in x])
    np.testing.assert_allclose(one, rms_norm(x), rtol=4 * np.finfo(dtype).eps, atol=0)
    np.testing.assert_allclose(one, x / np.sqrt(np.mean(x.astype(np.float64) ** 2, -1, keepdims=True) + 1e-5),
                               rtol=4 * np.finfo(dtype).eps, atol=0)


def test_cache_holds_each_token_as_a_column_of_keys_then_values():
    """Layout (layer, B, 2, Hkv, d_head, tokens): entry [l, b, 0, h, :, t] is token t's key for head h."""
    model, x = build(32, 4, 2, 2, 2, 3, 2, "float64")
    cache = make_cache("prealloc", model.shape, 2, 5)
    generate(model, x, 3, "prealloc", cache=cache)
    s, layer = model.shape, model.layers[0]
    h = x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-5)  # layer 0 sees x itself
    k = (h @ layer.w_qkv[:, s.d_model : s.d_model + s.d_kv]).reshape(2, 5, s.n_kv_heads, s.d_head)
    v = (h @ layer.w_qkv[:, s.d_model + s.d_kv :]).reshape(2, 5, s.n_kv_heads, s.d_head)
    np.testing.assert_allclose(cache.kv[0, :, 0], k.transpose(0, 2, 3, 1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(cache.kv[0, :, 1], v.transpose(0, 2, 3, 1), rtol=0, atol=1e-12)
    concat = ConcatCache(s, 2)
    generate(model, x, 3, "concat", cache=concat)
    for i in range(2):
        np.testing.assert_array_equal(concat.columns[i].reshape(cache.kv[i].shape), cache.kv[i])


def test_decode_step_writes_into_out():
    model, x = build(32, 4, 2, 2, 2, 3, 1, "float32")
    results = []
    for out in (None, np.empty((2, 32), np.float32)):
        cache = make_cache("prealloc", model.shape, 2, 4)
        forward(model, x[:, :3], cache)
        y = decode_step(model, x[:, 3], cache, out=out)
        assert out is None or y is out
        results.append(y)
    np.testing.assert_array_equal(results[0], results[1])
