"""GGUF formats against llama.cpp's own gguf-py: bytes for the legacy quantizers, values for decoding."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants

from infer_core.quant import dequantize_gguf, error_metrics, quantize_gguf

LEGACY = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1"]
K_QUANTS = ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]
BLOCKS = {"q8_0": (32, 34), "q4_0": (32, 18), "q4_1": (32, 20), "q5_0": (32, 22), "q5_1": (32, 24),
          "q2_k": (256, 84), "q3_k": (256, 110), "q4_k": (256, 144), "q5_k": (256, 176),
          "q6_k": (256, 210)}  # values and bytes per block (llama.cpp's ggml-common.h)
ALL = [*LEGACY, *K_QUANTS]

# For each format: values that make d exactly 1 (placed first in every block), and the values v
# at which a code changes (x * 1/d lands on a rounding or truncation boundary).
SETUP = {
    "q8_0": ([127.0], np.arange(-126, 126) + 0.5),  # roundf ties: k + 0.5
    "q4_0": ([-8.0], np.arange(-8, 8) + 0.5),  # trunc(x + 8.5) steps at x = k + 0.5
    "q4_1": ([0.0, 15.0], np.arange(0, 15) + 0.5),  # trunc(x - min + 0.5) steps at k + 0.5
    "q5_0": ([-16.0], np.arange(-16, 16) + 0.5),
    "q5_1": ([0.0, 31.0], np.arange(0, 31) + 0.5),
}


def gguf_bytes(x: np.ndarray, fmt: str) -> np.ndarray:
    return quants.quantize(x, getattr(T, fmt.upper()))


def tie_rows(fmt: str, scale: float) -> np.ndarray:
    """Rows of blocks holding every boundary value and its float32 neighbours, times ``scale``."""
    anchors, ties = SETUP[fmt]
    ties = ties.astype(np.float32)
    values = np.concatenate([ties, np.nextafter(ties, np.float32(-np.inf)), np.nextafter(ties, np.float32(np.inf))])
    per_block = 32 - len(anchors)
    values = np.concatenate([values, np.zeros(-len(values) % per_block, np.float32)]).reshape(-1, per_block)
    blocks = np.concatenate([np.tile(np.float32(anchors), (len(values), 1)), values], axis=1)
    return (blocks.reshape(1, -1) * np.float32(scale)).astype(np.float32)


@pytest.mark.parametrize("fmt", LEGACY)
def test_legacy_bytes_equal_gguf_on_random_matrices(fmt):
    rng = np.random.default_rng(7)
    for x in (rng.standard_normal((16, 1024)), rng.standard_t(2, (8, 512)) * 30, rng.uniform(-1e-3, 1e-3, (4, 256))):
        x = x.astype(np.float32)
        np.testing.assert_array_equal(quantize_gguf(x, fmt), gguf_bytes(x, fmt))


@pytest.mark.parametrize("fmt", LEGACY)
def test_legacy_bytes_equal_gguf_on_special_rows(fmt):
    rng = np.random.default_rng(3)
    rows = {
        "zeros": np.zeros(64),
        "negative zeros": -np.zeros(64),
        "constant": np.full(64, 0.37),
        "negative constant": np.full(64, -2.5),
        "all positive": rng.uniform(10, 11, 64),
        "all negative": rng.uniform(-11, -10, 64),
        "+a and -a, -a first": np.r_[-3.0, np.linspace(-2, 2, 30), 3.0, rng.normal(size=32)],
        "+a and -a, +a first": np.r_[3.0, np.linspace(-2, 2, 30), -3.0, rng.normal(size=32)],
        "one spike": np.r_[np.zeros(31), 1e4, np.zeros(32)],
        "tiny": rng.normal(size=64) * 1e-30,
    }
    for name, row in rows.items():
        x = row.astype(np.float32).reshape(1, -1)
        np.testing.assert_array_equal(quantize_gguf(x, fmt), gguf_bytes(x, fmt), err_msg=name)


@pytest.mark.parametrize("scale", [1.0, 2.0**-7, -(2.0**5)])
@pytest.mark.parametrize("fmt", LEGACY)
def test_legacy_bytes_equal_gguf_on_ties_and_their_neighbours(fmt, scale):
    x = tie_rows(fmt, scale)
    ours = quantize_gguf(x, fmt)
    np.testing.assert_array_equal(ours, gguf_bytes(x, fmt))
    if fmt == "q8_0" and scale == 1.0:  # the ties really are ties: d is exactly 1
        d = ours.reshape(-1, 34)[:, :2].copy().view("<f2")
        assert (d == 1).all()


def test_ties_round_away_from_zero_in_q8_0():
    x = np.zeros((1, 32), np.float32)
    x[0, :4] = [127.0, 0.5, -0.5, 2.5]  # d = 1: roundf gives 1, -1, 3 (np.round would give 0, -0, 2)
    codes = quantize_gguf(x, "q8_0")[0, 2:].view(np.int8)
    assert codes[:4].tolist() == [127, 1, -1, 3]


@pytest.mark.parametrize("fmt", ALL)
def test_dequantize_equals_gguf_on_any_bytes(fmt):
    """Random bytes, NaN and inf fp16 scales included, decode exactly as gguf-py decodes them."""
    block, size = BLOCKS[fmt]
    data = np.random.default_rng(11).integers(0, 256, (6, 3 * size), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # inf * 0 in both decoders
        ours, ref = dequantize_gguf(data, fmt), quants.dequantize(data, getattr(T, fmt.upper()))
    assert ours.shape == ref.shape == (6, 3 * block) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("fmt", ALL)
def test_shapes_follow_gguf(fmt):
    x = np.random.default_rng(0).standard_normal((2, 3, 512)).astype(np.float32)
    q = quantize_gguf(x, fmt.upper())  # names are case-insensitive
    block, size = BLOCKS[fmt]
    assert q.shape == (2, 3, 512 // block * size) and q.dtype == np.uint8
    if fmt in LEGACY:
        assert q.shape == gguf_bytes(x, fmt).shape
    assert dequantize_gguf(q, fmt).shape == (2, 3, 512)
    flat = quantize_gguf(x.reshape(-1), fmt)
    assert flat.ndim == 1 and np.array_equal(flat, q.reshape(-1))


def test_block_sizes():
    x = np.zeros((1, 256), np.float32)
    sizes = {f: quantize_gguf(x, f).nbytes for f in ALL}
    assert sizes == {"q8_0": 8 * 34, "q4_0": 8 * 18, "q4_1": 8 * 20, "q5_0": 8 * 22, "q5_1": 8 * 24,
                     "q2_k": 84, "q3_k": 110, "q4_k": 144, "q5_k": 176, "q6_k": 210}


def sqnr(fmt: str, x: np.ndarray) -> float:
    return error_metrics(x, dequantize_gguf(quantize_gguf(x, fmt), fmt))["sqnr_db"]


def test_sqnr_reference_points_and_k_quants_beat_legacy():
    """Reference SQNR points on N(0,1) rows, 64x4096; Q4_K > Q4_0 and Q6_K > Q5_1."""
    x = np.random.default_rng(0).standard_normal((64, 4096)).astype(np.float32)
    got = {f: sqnr(f, x) for f in ALL}
    for fmt, ref in {"q8_0": 45.4, "q5_0": 27.4, "q4_1": 22.1, "q4_0": 21.3}.items():
        assert got[fmt] == pytest.approx(ref, abs=0.15), fmt
    assert got["q4_k"] > got["q4_0"] + 1.0
    assert got["q6_k"] > got["q5_1"] + 5.0


@pytest.mark.parametrize("fmt", K_QUANTS)
def test_gguf_decodes_our_k_quant_bytes_as_we_do(fmt):
    rng = np.random.default_rng(5)
    for x in (rng.standard_normal((8, 1024)), rng.standard_t(3, (4, 512)) * 7, rng.uniform(0, 1e-3, (2, 256))):
        q = quantize_gguf(x.astype(np.float32), fmt)
        np.testing.assert_array_equal(quants.dequantize(q, getattr(T, fmt.upper())), dequantize_gguf(q, fmt))


@pytest.mark.parametrize("dist", ["gaussian", "student_t"])
def test_k_quant_sqnr_rises_with_bits_per_weight(dist):
    """Q2_K < Q3_K < Q4_K < Q5_K < Q6_K, each about 6 dB (one bit) above the one before."""
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((32, 4096)) if dist == "gaussian" else rng.standard_t(4, (32, 4096))).astype(np.float32)
    got = [sqnr(f, x) for f in K_QUANTS]
    bits = [8 * BLOCKS[f][1] / BLOCKS[f][0] for f in K_QUANTS]  # 2.625, 3.4375, 4.5, 5.5, 6.5625
    assert bits == sorted(bits) and got == sorted(got), got
    assert all(4.0 < b - a < 7.5 for a, b in itertools.pairwise(got)), got


@pytest.mark.parametrize("dist", ["gaussian", "student_t"])
@pytest.mark.parametrize("fmt", K_QUANTS)
def test_k_quant_sqnr_is_at_least_llamacpps_own_quantizer(fmt, dist):
    """Against ggml's C quantizer (``ggml_quantize_chunk``, no importance matrix) on the same rows of a
    TinyLlama-sized layer, on the error each minimizes: our search is shorter than llama.cpp's and never worse.
    The affine types fit unweighted (the SQNR); Q3_K and Q6_K weight each value by x², as llama.cpp does (the
    x²-weighted SQNR: what keeps a model's large weights, and its KL divergence, closest)."""
    from experiments.shared.llamacpp import ggml_quantize

    rng = np.random.default_rng(7)
    x = rng.standard_normal((256, 2048)) if dist == "gaussian" else rng.standard_t(5, (256, 2048))
    x = (x / np.sqrt(2048)).astype(np.float32)
    w = x * x if fmt in ("q3_k", "q6_k") else np.ones_like(x)

    def weighted_sqnr(y: np.ndarray) -> float:
        return float(10 * np.log10((w * x * x).sum(dtype=np.float64) / (w * (x - y) ** 2).sum(dtype=np.float64)))

    ours = weighted_sqnr(dequantize_gguf(quantize_gguf(x, fmt), fmt))
    theirs = weighted_sqnr(dequantize_gguf(ggml_quantize(x, fmt), fmt))
    assert ours >= theirs - 0.005, (ours, theirs)  # 0.005 dB: float32 sums of two equal fits


@pytest.mark.parametrize("fmt", ALL)
def test_threads_give_the_same_bytes(fmt):
    x = np.random.default_rng(2).standard_normal((64, 4096)).astype(np.float32)
    one = quantize_gguf(x, fmt)
    np.testing.assert_array_equal(quantize_gguf(x, fmt, threads=2), one)
    np.testing.assert_array_equal(dequantize_gguf(one, fmt, threads=2), dequantize_gguf(one, fmt))


@pytest.mark.parametrize("fmt", ALL)
def test_zero_and_constant_rows_without_warnings(fmt):
    x = np.zeros((3, 256), np.float32)
    x[1] = 0.75  # representable in every format
    x[2] = -0.1
    with warnings.catch_warnings(), np.errstate(divide="raise", over="raise", invalid="raise"):
        warnings.simplefilter("error")
        back = dequantize_gguf(quantize_gguf(x, fmt), fmt)
    np.testing.assert_array_equal(back[0], 0)
    np.testing.assert_allclose(back[1], 0.75, rtol=2e-3)  # fp16 scale: within half a ulp
    np.testing.assert_allclose(back[2], -0.1, rtol=2e-3)


@pytest.mark.parametrize("fmt", ALL)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_names_the_row(fmt, bad):
    x = np.ones((4, 256), np.float32)
    x[2, 77] = bad
    with pytest.raises(ValueError, match=r"non-finite input: row 2 holds .* at column 77"):
        quantize_gguf(x, fmt)


@pytest.mark.parametrize("fmt", ALL)
@pytest.mark.parametrize("block", [[np.inf, -np.inf], [-np.inf, np.inf], [np.nan, np.inf], [np.nan] * 32])
def test_non_finite_mixes_are_reported_without_warnings(fmt, block):
    x = np.full((3, 512), 0.5, np.float32)
    x[1, 300 : 300 + len(block)] = block
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"non-finite input: row 1 holds .* at column 300"):
            quantize_gguf(x, fmt)


@pytest.mark.parametrize("fmt", LEGACY)
def test_finite_values_beyond_fp16_quantize_like_gguf(fmt):
    x = np.linspace(-3e38, 3e38, 64, dtype=np.float32).reshape(1, 64)  # d overflows fp16 to inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # both warn of the overflowing fp16 cast
        expected = quants.quantize(x, getattr(T, fmt.upper()))
        ours = quantize_gguf(x, fmt)
    np.testing.assert_array_equal(ours, expected)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown GGUF format 'q3_0'"):
        quantize_gguf(np.zeros(32, np.float32), "q3_0")
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize_gguf(np.zeros(40, np.float32), "q4_0")
    with pytest.raises(ValueError, match="multiple of 18"):
        dequantize_gguf(np.zeros(20, np.uint8), "q4_0")
