"""Uniform b-bit, NF4, packing and metrics: the quantization rules, checked exactly."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from infer_core.quant import (
    NF4_CODE,
    QuantSpec,
    error_metrics,
    output_cosine,
    quantize,
    quantize_nf4,
    quantize_uniform,
    synthetic_weights,
)
from infer_core.quant.packing import pack_codes, packed_nbytes, unpack_codes

RNG = np.random.default_rng(5)
W = RNG.standard_normal((64, 256)).astype(np.float32)


@pytest.mark.parametrize("bits", range(2, 9))
def test_packing_round_trip_and_size(bits):
    codes = RNG.integers(0, 2**bits, 1001, dtype=np.uint8)
    packed = pack_codes(codes, bits)
    assert packed.nbytes == packed_nbytes(1001, bits) == (1001 * bits + 7) // 8
    np.testing.assert_array_equal(unpack_codes(packed, bits, 1001), codes)


def test_nibble_order():
    assert pack_codes(np.array([1, 2, 3, 4], np.uint8), 4).tolist() == [0x21, 0x43]
    lo, hi = np.divmod(np.arange(256), 16)[::-1]  # every (low, high) pair once: 512 codes, no padding
    pairs = np.stack([lo, hi], axis=1).astype(np.uint8).reshape(-1)
    assert pack_codes(pairs, 4).tolist() == list(range(256))


def test_int4_and_nf4_sizes_are_exact():
    w = RNG.standard_normal((512, 512)).astype(np.float32)
    g32 = quantize_uniform(w, 4, "symmetric", "per_group", 32)
    assert g32.codes.nbytes == 512 * 512 // 2 and g32.scales.nbytes == 512 * 16 * 2
    assert g32.nbytes == 147_456 and g32.bits_per_weight == 4.5
    aff = quantize_uniform(w, 4, "affine", "per_group", 128)
    assert aff.nbytes == 131_072 + 2048 * 2 + 2048 * 2 and aff.bits_per_weight == 4 + 16 / 128 + 16 / 128
    nf4 = quantize_nf4(w)
    assert nf4.nbytes == 131_072 + 4096 * 2 and nf4.bits_per_weight == 4.25
    assert quantize_uniform(w, 8, "symmetric", "per_tensor").nbytes == 512 * 512 + 2
    assert quantize_uniform(w, 3, "symmetric", "per_channel", scale_dtype="float32").nbytes == 512 * 512 * 3 // 8 + 2048


def test_affine_all_positive_row_vs_the_classic_rule():
    """[10, 11] comes back with an error of ~10 under the naive min/max rule."""
    x = np.array([[10.0, 11.0]], np.float32)
    affine = quantize_uniform(x, 8, "affine", "per_channel")
    scale = float(affine.scales[0])
    assert np.abs(affine.dequantize() - x).max() < scale / 2
    naive = quantize_uniform(x, 8, "naive_minmax", "per_channel")
    assert np.abs(naive.dequantize() - x).max() == pytest.approx(10.0, abs=0.01)
    negative = quantize_uniform(-x, 8, "affine", "per_channel")
    assert np.abs(negative.dequantize() + x).max() < float(negative.scales[0]) / 2


def test_zero_is_exact_under_affine_and_symmetric():
    w = np.array([[0.0, 0.3, 1.7, 5.0], [-4.0, 0.0, -0.2, -1.0]], np.float32)
    for scheme in ("affine", "symmetric"):
        back = quantize_uniform(w, 4, scheme, "per_channel").dequantize()
        assert back[0, 0] == 0 and back[1, 1] == 0, scheme


def test_symmetric_int8_per_channel_mse_matches_uniform_noise():
    """Rounding noise is uniform on ±scale/2: MSE = mean(scale²)/12, within 5% on N(0,1) rows."""
    w = np.random.default_rng(1).standard_normal((256, 4096)).astype(np.float32)
    q = quantize_uniform(w, 8, "symmetric", "per_channel", scale_dtype="float32")
    predicted = np.mean(q.scales.astype(np.float64) ** 2) / 12
    measured = error_metrics(w, q.dequantize())["mse"]
    assert measured == pytest.approx(predicted, rel=0.05)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("scheme", ["symmetric", "affine", "naive_minmax"])
@pytest.mark.parametrize("gran", ["per_tensor", "per_channel", "per_group"])
def test_every_combination_stays_within_its_error_bound(bits, scheme, gran):
    """Symmetric: half a step everywhere. Min/max schemes: half a step inside the range; at its
    ends the integer zero point can shift the grid by up to half a step more."""
    q = quantize_uniform(W, bits, scheme, gran, 32)
    err = np.abs(q.dequantize() - W)
    n_rows = {"per_tensor": 1, "per_channel": 64, "per_group": 64 * 8}[gran]
    scales = np.broadcast_to(q.scales.astype(np.float32), (n_rows,))
    step = np.repeat(scales, W.size // n_rows).reshape(W.shape)
    bound = step / 2 if scheme == "symmetric" else step
    assert (err <= bound * (1 + 1e-3) + 1e-7).all()
    assert np.median(err / step) < 0.3  # and most values are rounded, not clipped
    assert q.bits_per_weight == pytest.approx(8 * q.nbytes / W.size)


def test_symmetric_codes_use_the_symmetric_range():
    w = np.array([[-1.0, -0.5, 0.0, 0.5, 1.0, 0.25]], np.float32)
    q = quantize_uniform(w, 8, "symmetric", "per_channel", scale_dtype="float32")
    assert q.codes.view(np.int8).tolist() == [-127, -64, 0, 64, 127, 32]  # 63.5 -> 64 (half to even)


def test_rows_of_zeros_and_constants_without_warnings():
    w = np.zeros((3, 64), np.float32)
    w[1] = 0.5
    w[2] = -3.0
    with warnings.catch_warnings(), np.errstate(divide="raise", invalid="raise", over="raise"):
        warnings.simplefilter("error")
        for scheme in ("symmetric", "affine", "naive_minmax"):
            for gran in ("per_tensor", "per_channel", "per_group"):
                back = quantize_uniform(w, 4, scheme, gran, 32).dequantize()
                if scheme != "naive_minmax":  # the classic rule loses constant rows: that is its flaw
                    np.testing.assert_array_equal(back[0], 0)
                    assert np.abs(back[1:] - w[1:]).max() <= 3.0 / 7 / 2 + 1e-6, (scheme, gran)
        back = quantize_nf4(w).dequantize()
    np.testing.assert_allclose(back, w, rtol=1e-3)  # ±absmax is in the table: constant rows are exact


def test_nf4_codes_are_the_nearest_table_entries():
    w = RNG.standard_normal((4, 128)).astype(np.float32)
    q = quantize_nf4(w, scale_dtype="float32")
    blocks = w.reshape(-1, 64)
    normalized = blocks / np.abs(blocks).max(axis=1, keepdims=True)
    nearest = np.abs(normalized[..., None] - NF4_CODE).argmin(axis=-1)
    codes = np.stack([q.codes >> 4, q.codes & 0x0F], axis=-1).reshape(-1, 64)
    np.testing.assert_array_equal(codes, nearest)
    expected = NF4_CODE[nearest] * np.abs(blocks).max(axis=1, keepdims=True)
    np.testing.assert_allclose(q.dequantize(), expected.reshape(w.shape), rtol=1e-6)


def test_nf4_nearest_code_at_and_around_every_midpoint():
    from infer_core.quant.nf4 import nearest_code

    mid = ((NF4_CODE[1:] + NF4_CODE[:-1]) / 2).astype(np.float32)
    below, above = np.nextafter(mid, np.float32(-2)), np.nextafter(mid, np.float32(2))
    k = np.arange(15)
    np.testing.assert_array_equal(nearest_code(mid), k)  # a tie goes to the lower code
    np.testing.assert_array_equal(nearest_code(below), k)
    np.testing.assert_array_equal(nearest_code(above), k + 1)
    np.testing.assert_array_equal(nearest_code(NF4_CODE), np.arange(16))  # every table value is its own code
    v = RNG.uniform(-1, 1, 10_000).astype(np.float32)
    np.testing.assert_array_equal(nearest_code(v), np.abs(v[:, None] - NF4_CODE).argmin(axis=1))


def test_nf4_of_a_matrix_spanning_many_chunks_matches_the_table_rule():
    w = RNG.standard_normal((64, 8192)).astype(np.float32)  # 524,288 values: four chunks
    q = quantize_nf4(w, scale_dtype="float32")
    blocks = w.reshape(-1, 64)
    absmax = np.abs(blocks).max(axis=1)
    np.testing.assert_array_equal(q.absmax, absmax)
    codes = np.stack([q.codes >> 4, q.codes & 0x0F], axis=-1).reshape(-1, 64)
    scaled = blocks * (np.float32(1) / absmax)[:, None]  # the quantizer's own float32 arithmetic
    np.testing.assert_array_equal(codes, np.searchsorted((NF4_CODE[1:] + NF4_CODE[:-1]) / 2, scaled))


SPECS = [QuantSpec(), QuantSpec("nf4"), QuantSpec("q4_k"), QuantSpec(bits=4, granularity="per_group", group_size=64)]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_names_the_row(spec, bad):
    w = np.ones((5, 256), np.float32)
    w[3, 9] = bad
    with pytest.raises(ValueError, match="non-finite input: row 3"):
        quantize(w, spec)


def test_argument_errors():
    with pytest.raises(ValueError, match="bits=9"):
        quantize_uniform(W, 9)
    with pytest.raises(ValueError, match="group_size=100 must divide the row length 256"):
        quantize_uniform(W, 4, "symmetric", "per_group", 100)
    with pytest.raises(ValueError, match="overflows float16"):
        quantize_uniform(np.full((1, 4), 1e8, np.float32), 8)
    with pytest.raises(ValueError, match="format='q2'"):
        quantize(W, QuantSpec("q2"))


def test_metrics_by_hand():
    w = np.array([[3.0, 4.0]])
    m = error_metrics(w, np.array([[3.0, 4.5]]))
    assert m == {"mae": 0.25, "max_abs_err": 0.5, "mse": 0.125, "rel_l2": 0.1, "sqnr_db": pytest.approx(20.0)}
    assert error_metrics(w, w)["sqnr_db"] == float("inf")
    x = np.eye(2)
    np.testing.assert_allclose(output_cosine(w, w, x), [1.0, 1.0])
    np.testing.assert_allclose(output_cosine(np.eye(2), np.array([[0.0, 1.0], [1.0, 0.0]]), np.eye(2)), [0.0, 0.0])


def test_synthetic_distributions():
    rng = np.random.default_rng(0)
    demo = synthetic_weights("demo_matrix", 512, 512, rng)
    assert demo.dtype == np.float32 and demo.shape == (512, 512)
    assert np.std(demo[:100]) == pytest.approx(0.04, rel=0.05)
    assert np.std(demo[200:400]) == pytest.approx(0.02, rel=0.05)
    assert np.std(demo[-50:]) == pytest.approx(0.01, rel=0.05)
    assert (synthetic_weights("layernorm", 8, 64, rng) > 0).all()
    outl = synthetic_weights("outlier_channels", 256, 400, rng)
    col_std = outl.std(axis=0)
    assert (col_std > 0.2).sum() == 4  # 1% of 400 columns, x20
    t = synthetic_weights("student_t", 512, 512, rng)
    assert np.abs(t).max() > 10 * np.std(t)  # heavy tails


def test_row_buffers_shrink_the_ufunc_buffer_for_long_rows_only_and_restore_it():
    from infer_core.quant.common import ROW_BUFFER_MIN, row_buffers

    default = np.getbufsize()
    with row_buffers(4100):
        assert np.getbufsize() == 4096  # the largest multiple of 16 not above the row
    assert np.getbufsize() == default
    with row_buffers(ROW_BUFFER_MIN - 1):
        assert np.getbufsize() == default  # short rows keep the default
    with row_buffers(10**6):
        assert np.getbufsize() == default  # never larger than the default
    with pytest.raises(RuntimeError, match="inside"), row_buffers(1024):
        raise RuntimeError("inside")
    assert np.getbufsize() == default  # restored on an exception too


def test_long_row_quantization_is_identical_under_any_buffer_size():
    w = np.random.default_rng(5).standard_normal((64, 1000)).astype(np.float32)  # rows > ROW_BUFFER_MIN
    q = quantize_uniform(w, 8, "symmetric", "per_channel")
    with np.errstate():
        np.setbufsize(8192)
        inv = np.float32(1) / q.scales.astype(np.float32)  # the quantizer's own arithmetic
        codes = np.rint(w * inv[:, None]).astype(np.int8)
    assert np.array_equal(q.codes.view(np.int8).reshape(64, 1000), codes)
    assert np.array_equal(q.dequantize(), codes * q.scales.astype(np.float32)[:, None])


@pytest.mark.parametrize("length", [4, 8, 32, 36, 60, 64, 128, 4096])
def test_row_max_min_equals_numpy_on_every_path(length):
    from infer_core.quant.common import row_max_min

    b = RNG.standard_normal((300, length)).astype(np.float32)
    b[7, length // 2] = np.nan
    b[11, 0], b[12, -1] = np.inf, -np.inf
    b[13] = -0.0
    for arr in (b, b[::2], b.astype(np.float64)):  # contiguous, strided rows, another dtype
        mx, mn = row_max_min(arr)
        np.testing.assert_array_equal(mx, arr.max(axis=1))
        np.testing.assert_array_equal(mn, arr.min(axis=1))
