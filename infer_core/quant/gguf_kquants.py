"""GGUF K-quants Q2_K, Q3_K, Q4_K, Q5_K and Q6_K: 256-value super-blocks, our own quantizer.

The byte layouts are llama.cpp's (``ggml-common.h``), so ``gguf.quants.dequantize`` reads what we write:

- ``block_q2_K`` (84 B): 16 bytes of 4-bit scale and 4-bit min per 16 values, 64 bytes of 2-bit
  codes, fp16 d, fp16 dmin; a value is d·scale·q − dmin·min.
- ``block_q3_K`` (110 B): 32 bytes of high bits, 64 bytes of 2-bit low codes, 12 bytes of sixteen
  6-bit scales (stored + 32), fp16 d; a value is d·scale·q with q in [−4, 3].
- ``block_q4_K`` (144 B): fp16 d, fp16 dmin, 12 bytes of packed 6-bit scales and mins, 128 bytes of
  nibbles; ``block_q5_K`` (176 B) the same plus 32 bytes of fifth bits before the nibbles.
- ``block_q6_K`` (210 B): 128 bytes low nibbles, 64 bytes high 2-bit pairs, 16 int8 scales, fp16 d.

The quantizer fits every sub-block by a small grid search over the scale with a least-squares
refit (as llama.cpp's ``make_qkx2_quants`` / ``make_qx_quants`` do: unweighted for the affine types
Q2_K, Q4_K and Q5_K, weighted by x² for the symmetric Q3_K and Q6_K as llama.cpp weights them), then
quantizes the sub-block scales to 6 or 8 bits and recomputes the codes with the stored scales.
"""

from __future__ import annotations

import threading

import numpy as np

from infer_core.quant.common import fp16_bytes, fp16_from_bytes, inverse, round_half_away

QK_K = 256
#: Values a K-quant chunk holds (1 MiB of float32). A K-quant makes many per-sub-block NumPy calls
#: whose overhead, and GIL, larger chunks amortize, and smaller ones keep in cache: measured on a
#: 5632x2048 tensor, Q4_K at 2^17 / 2^18 / 2^19 values ran 0.21 / 0.33 / 0.32 GB/s on 2 threads.
CHUNK_ELEMENTS = 1 << 18


#: Padding of the transposed rows: a row stride of a power of two bytes makes the transposes 4x
#: slower (every strided access lands in the same cache set).
_PAD = 16
#: Scales tried per sub-block and format: ``iscale = (nmax + delta) / span`` (affine) or
#: ``−(nmax + delta) / peak`` (symmetric) for each delta, each refitted by least squares, then one
#: refinement from the best. llama.cpp tries 21 evenly spaced deltas over [−1, 1] (Q4_K, Q5_K; Q2_K
#: 16) or 19 over [−0.9, 0.9] (Q3_K, Q6_K). The affine ones (unweighted) keep the SQNR above
#: llama.cpp's on N(0, 1), Student-t(3 and 5) and Laplace rows (by 0.01-0.04 dB for Q4_K, 0.02-0.07
#: for Q5_K, 0.8-1.3 for Q2_K; on uniform rows, which weights are not, Q4_K comes out 0.04 dB below);
#: the symmetric ones, weighted by x² as llama.cpp weights them, keep the weighted SQNR at or above
#: llama.cpp's (Q3_K by 0.5-0.7 dB; Q6_K needs seven deltas to reach it). ``benchmarks/bench_quant.py``
#: prints both quantizers' SQNR; ``benchmarks/bench_requantize.py`` the KL divergence of whole models.
GRID = {"q2_k": (-1.0, -0.3, 0.4), "q3_k": (0.0, -0.9), "q4_k": (-0.95, -0.4, -0.05, 0.3, 0.6),
        "q5_k": (-1.0, -0.4, 0.1, 0.6), "q6_k": (0.0, -0.9, -0.6, -0.3, 0.3, 0.6, 0.9)}


_scratch = threading.local()


def _buffer(name: str, shape: tuple[int, int], dtype: type = np.float32, pad: int = _PAD) -> np.ndarray:
    """A per-thread scratch array ``(rows, cols)`` (its rows padded by ``pad``), reused from chunk to
    chunk: a fresh array of a chunk's size is fresh pages, and their faults cost a third of a K-quant's
    time (measured: Q4_K 0.114 -> 0.158 GB/s on one thread with allocations kept mapped)."""
    rows, cols = shape
    size = rows * (cols + pad)
    flat = getattr(_scratch, name, None)
    if flat is None or flat.size < size or flat.dtype != dtype:
        flat = np.empty(size, dtype=dtype)
        setattr(_scratch, name, flat)
    return flat[:size].reshape(rows, cols + pad)[:, :cols]


def _columns(b: np.ndarray, sub: int) -> np.ndarray:
    """Blocks (n, 256) as sub-blocks in columns, (sub, n·256/sub) float32: per-sub-block sums become
    row additions and per-sub-block scales broadcast along contiguous rows, both fast in NumPy."""
    m = b.size // sub
    out = _buffer("columns", (sub, m))
    out[...] = b.reshape(m, sub).T
    return out


def _rows(qt: np.ndarray, n: int, k: int) -> np.ndarray:
    """Codes in columns (sub, n·k), float32, back to (n, k, sub) uint8 (through a padded uint8 copy: its
    transpose is then as fast as the float32 one)."""
    sub, m = qt.shape
    codes = _buffer("codes", (sub, m), np.uint8)
    np.copyto(codes, qt, casting="unsafe")
    rows = _buffer("rows", (m, sub), np.uint8, pad=0)
    rows[...] = codes.T
    return rows.reshape(n, k, sub)


def _codes(xt: np.ndarray, iscale: np.ndarray, offset: np.ndarray | np.float32, lo: float, hi: float,
           out: np.ndarray | None = None) -> np.ndarray:
    """``clip(floor(xt·iscale + offset), lo, hi)`` per column, as float32 (offset holds the +0.5)."""
    q = np.multiply(xt, iscale, out=out)
    q += offset
    np.floor(q, out=q)
    return np.clip(q, np.float32(lo), np.float32(hi), out=q)


def _code_sums(q: np.ndarray, xt: np.ndarray, out: np.ndarray) -> None:
    """Per column of codes ``q``: Σq, Σq², Σq·x into ``out`` (3, m). ``einsum`` sums the products in one
    pass, without writing them (2.3x faster than a product then a reduction)."""
    np.add.reduce(q, axis=0, out=out[0])
    np.einsum("ij,ij->j", q, q, out=out[1])
    np.einsum("ij,ij->j", q, xt, out=out[2])


def _affine_refit(sums: np.ndarray, sx: np.ndarray, sxx: np.ndarray, n: np.float32) -> tuple[np.ndarray, ...]:
    """Least-squares (a, b) with x ~ a·q + b from the code sums (3, ..., m), b <= 0 (the stored min is
    subtracted), and the squared error in closed form; inf where a <= 0."""
    sl, sll, slx = sums
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (n * slx - sl * sx) / (n * sll - sl * sl)
        b = (sx - a * sl) / n
        clamp = b > 0
        a = np.where(clamp, slx / sll, a)
        b = np.where(clamp, np.float32(0), b)
        err = a * (a * sll + 2 * b * sl - 2 * slx) + b * (n * b - 2 * sx) + sxx
    return a, b, np.where(a > 0, err, np.float32(np.inf))


def _fit_affine(xt: np.ndarray, nmax: int, deltas: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``xt`` (sub, m): scale a >= 0 and min m >= 0 with x ~ a·L − m, L in [0, nmax].

    Tries a scale per delta (as llama.cpp's ``make_qkx2_quants`` tries its grid, unweighted here),
    refits (a, m) by least squares on each candidate's codes, keeps the smallest squared error
    (computed from the code sums in closed form, all candidates at once), and refines the best once.
    """
    m = xt.shape[1]
    n = np.float32(xt.shape[0])
    lo = np.minimum(xt.min(axis=0), np.float32(0))
    span = xt.max(axis=0) - lo
    sx, sxx = xt.sum(axis=0), np.einsum("ij,ij->j", xt, xt)
    unit = np.subtract(xt, lo, out=_buffer("unit", xt.shape))
    unit *= inverse(span)  # in [0, 1]: a candidate's codes are one scalar product away, no offset
    q = _buffer("q", xt.shape)
    sums = np.empty((3, len(deltas), m), dtype=np.float32)
    for i, delta in enumerate(deltas):  # rint rounds ties to even: exact halves may code unlike roundf
        np.rint(np.multiply(unit, np.float32(nmax + delta), out=q), out=q)
        if delta > 0:  # only a scale past nmax/span can code above nmax
            np.minimum(q, np.float32(nmax), out=q)
        _code_sums(q, xt, sums[:, i])
    a, b, err = _affine_refit(sums, sx, sxx, n)
    best_err, best_a, best_b = _best(err, a, b)
    none = ~np.isfinite(best_err)  # no candidate with a > 0 (a constant or all-zero column)
    best_a[none], best_b[none] = (span / np.float32(nmax))[none], lo[none]
    iscale = inverse(best_a)
    _code_sums(_codes(xt, iscale, np.float32(0.5) - best_b * iscale, 0, nmax, out=q), xt, sums[:, 0])
    a, b, err = _affine_refit(sums[:, 0], sx, sxx, n)
    better = err < best_err
    return np.where(better, a, best_a), -np.where(better, b, best_b)


def _best(err: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per column of ``err`` (k <= 8 candidates, m): the smallest error and the matching entries of
    ``values`` (each (k, m)). Non-negative float32 order as their bit patterns do, so the candidate's
    index goes in the three low bits and one fast minimum down axis 0 finds it (an ``argmin`` down
    axis 0 is 10x slower); errors within 8 ulps count as equal and the first wins."""
    k, m = err.shape
    assert k <= 8, "three bits hold the candidate's index"
    key = np.maximum(err, np.float32(0)).view(np.int32)
    key &= np.int32(~7)
    key |= np.arange(k, dtype=np.int32)[:, None]
    flat = (np.minimum.reduce(key, axis=0) & 7) * m + np.arange(m)
    return tuple(np.take(v.reshape(-1), flat) for v in (err, *values))


def _fit_symmetric(xt: np.ndarray, nmax: int, deltas: tuple[float, ...]) -> np.ndarray:
    """Per column: scale s with x ~ s·L, L in [−nmax, nmax−1], by a search around −nmax/max and one
    refinement, each candidate refitted by least squares weighted by x² (llama.cpp's ``make_qx_quants``
    with ``rmse_type`` 1 and ``make_q3_quants`` weight each value so: the large values, which a model's
    output depends on most, are kept closest; unweighted fits score a higher SQNR and a worse KL divergence)."""
    m = xt.shape[1]
    mx, mn = xt.max(axis=0), xt.min(axis=0)
    peak = np.where(-mn > mx, mn, mx)
    w = np.multiply(xt, xt, out=_buffer("w", xt.shape))
    sxx = np.einsum("ij,ij->j", w, w)  # Σ w·x²
    unit = np.multiply(xt, inverse(peak), out=_buffer("unit", xt.shape))  # in [−1, 1], the peak at 1
    q = _buffer("q", xt.shape)
    wq = _buffer("wq", xt.shape)
    factors = [np.float32(-(nmax + d)) for d in deltas]
    sums = np.empty((2, len(factors) + 1, m), dtype=np.float32)

    def weighted_sums(i: int) -> None:
        np.multiply(q, w, out=wq)
        np.einsum("ij,ij->j", q, wq, out=sums[0, i])  # Σ w·L²
        np.einsum("ij,ij->j", wq, xt, out=sums[1, i])  # Σ w·L·x

    def fit(k: int) -> tuple[np.ndarray, np.ndarray]:
        sll, slx = sums[0, :k], sums[1, :k]
        s = slx * inverse(sll)
        return s, np.where(sll > 0, sxx - s * slx, np.float32(np.inf))

    for i, factor in enumerate(factors):
        np.rint(np.multiply(unit, factor, out=q), out=q)
        if -factor > nmax:  # only a factor past nmax can code below −nmax
            np.clip(q, np.float32(-nmax), np.float32(nmax - 1), out=q)
        else:
            np.minimum(q, np.float32(nmax - 1), out=q)
        weighted_sums(i)
    s, err = fit(len(factors))
    best_err, best_s = _best(err, s)
    best_s[~np.isfinite(best_err)] = (peak / np.float32(-nmax))[~np.isfinite(best_err)]
    np.clip(np.rint(np.multiply(xt, inverse(best_s), out=q), out=q), np.float32(-nmax), np.float32(nmax - 1), out=q)
    weighted_sums(len(factors))
    s, err = fit(len(factors) + 1)
    return np.where(err[-1] < best_err, s[-1], best_s)


def _affine_blocks(b: np.ndarray, sub: int, nmax: int, smax: int, deltas: tuple[float, ...]) -> tuple[np.ndarray, ...]:
    """Blocks ``b`` (n, 256) in sub-blocks of ``sub`` fitted as d·sc·q − dmin·mn: codes q in [0, nmax],
    sub-block scales sc and mins mn in [0, smax] under fp16 super-block scales; returns
    (d16, dmin16, sc, mn, q) with q (n, 256/sub, sub)."""
    n, k = b.shape[0], QK_K // sub
    xt = _columns(b, sub)
    scale, mins = (v.reshape(n, k) for v in _fit_affine(xt, nmax, deltas))
    d16 = (scale.max(axis=1) / np.float32(smax)).astype(np.float16).astype(np.float32)
    dmin16 = (mins.max(axis=1) / np.float32(smax)).astype(np.float16).astype(np.float32)
    sc = np.clip(_nearest(scale * inverse(d16)[:, None]), 0, smax).astype(np.uint8)
    mn = np.clip(_nearest(mins * inverse(dmin16)[:, None]), 0, smax).astype(np.uint8)
    eff_d = (d16[:, None] * sc).reshape(-1)
    eff_m = (dmin16[:, None] * mn).reshape(-1)
    iscale = inverse(eff_d)
    q = _codes(xt, iscale, np.float32(0.5) + eff_m * iscale, 0, nmax, out=_buffer("q", xt.shape))
    return d16, dmin16, sc, mn, _rows(q, n, k)


def _nearest(v: np.ndarray) -> np.ndarray:
    return round_half_away(np.array(v, dtype=np.float32))


def _pack_scales_mins_6bit(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins (n, 8) into llama.cpp's 12 bytes (``get_scale_min_k4``)."""
    return np.concatenate([
        sc[:, :4] | ((sc[:, 4:] >> 4) << 6),
        mn[:, :4] | ((mn[:, 4:] >> 4) << 6),
        (sc[:, 4:] & 0x0F) | ((mn[:, 4:] & 0x0F) << 4),
    ], axis=1)


def _unpack_scales_mins_6bit(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sc = np.concatenate([s[:, :4] & 0x3F, (s[:, 8:] & 0x0F) | ((s[:, :4] >> 2) & 0x30)], axis=1)
    mn = np.concatenate([s[:, 4:8] & 0x3F, (s[:, 8:] >> 4) | ((s[:, 4:8] >> 2) & 0x30)], axis=1)
    return sc, mn


def _bit_planes(q: np.ndarray, bit: int) -> np.ndarray:
    """Bit ``bit`` of codes (n, 8, 32) as 32 bytes (n, 32): byte l holds sub-block j's bit in bit j."""
    planes = ((q >> bit) & 1) << np.arange(8, dtype=np.uint8).reshape(1, 8, 1)
    return np.bitwise_or.reduce(planes, axis=1)


def _crumbs(q: np.ndarray) -> np.ndarray:
    """2-bit codes (n, 256) into 64 bytes: value c·128 + s·32 + l sits in bits 2s of byte c·32 + l."""
    n = q.shape[0]
    parts = (q.reshape(n, 2, 4, 32) & 3) << (2 * np.arange(4, dtype=np.uint8)).reshape(1, 1, 4, 1)
    return np.bitwise_or.reduce(parts, axis=2).reshape(n, 64)


def _uncrumb(qs: np.ndarray) -> np.ndarray:
    n = qs.shape[0]
    return ((qs.reshape(n, 2, 1, 32) >> (2 * np.arange(4, dtype=np.uint8)).reshape(1, 1, 4, 1)) & 3).reshape(n, 256)


def quantize_q2_k(b: np.ndarray, out: np.ndarray) -> None:
    """(n, 256) float32 -> (n, 84) bytes of ``block_q2_K``, written into ``out``."""
    n = b.shape[0]
    d16, dmin16, sc, mn, q = _affine_blocks(b, 16, 3, 15, GRID["q2_k"])
    out[:] = np.concatenate([sc | (mn << 4), _crumbs(q.reshape(n, QK_K)), fp16_bytes(d16), fp16_bytes(dmin16)],
                            axis=1)


def dequantize_q2_k(data: np.ndarray) -> np.ndarray:
    """(n, 84) bytes -> (n, 256) float32, as ``gguf.quants.Q2_K`` decodes them."""
    n = data.shape[0]
    scales, d, dmin = data[:, :16], fp16_from_bytes(data[:, 80:82]), fp16_from_bytes(data[:, 82:84])
    q = _uncrumb(data[:, 16:80]).reshape(n, 16, 16).astype(np.float32)
    return ((d * (scales & 0x0F).astype(np.float32))[..., None] * q
            - (dmin * (scales >> 4).astype(np.float32))[..., None]).reshape(n, QK_K)


def _symmetric_blocks(b: np.ndarray, nmax: int, smax: int,
                      deltas: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blocks ``b`` (n, 256) in sub-blocks of 16 fitted as d·sc·q: codes q in [−nmax, nmax−1] stored as
    q + nmax, signed sub-block scales sc in [−smax, smax−1] under an fp16 super-block scale; returns
    (d16, sc, q) with q (n, 16, 16)."""
    n = b.shape[0]
    xt = _columns(b, 16)
    scale = _fit_symmetric(xt, nmax, deltas).reshape(n, 16)
    big = np.take_along_axis(scale, np.abs(scale).argmax(axis=1)[:, None], axis=1)[:, 0]
    iscale = inverse(big) * np.float32(-smax)
    sc = np.clip(_nearest(iscale[:, None] * scale), -smax, smax - 1).astype(np.int8)
    d16 = inverse(iscale).astype(np.float16).astype(np.float32)
    inv = inverse((d16[:, None] * sc).reshape(-1))
    q = _codes(xt, inv, np.float32(0.5), -nmax, nmax - 1, out=_buffer("q", xt.shape))
    q += np.float32(nmax)
    return d16, sc, _rows(q, n, 16)


def quantize_q3_k(b: np.ndarray, out: np.ndarray) -> None:
    """(n, 256) float32 -> (n, 110) bytes of ``block_q3_K``, written into ``out``."""
    n = b.shape[0]
    d16, sc, q = _symmetric_blocks(b, 4, 32, GRID["q3_k"])
    q = q.reshape(n, 8, 32)  # L = q + 4 in [0, 7]
    stored = (sc.astype(np.int16) + 32).astype(np.uint8)  # (n, 16): 6 bits each
    low = (stored[:, :8] & 0x0F) | ((stored[:, 8:] & 0x0F) << 4)
    high = np.bitwise_or.reduce(((stored >> 4) & 3).reshape(n, 4, 4) << (2 * np.arange(4, dtype=np.uint8)
                                                                         ).reshape(1, 4, 1), axis=1)
    out[:] = np.concatenate([_bit_planes(q, 2), _crumbs(q.reshape(n, QK_K)), low, high, fp16_bytes(d16)], axis=1)


def dequantize_q3_k(data: np.ndarray) -> np.ndarray:
    """(n, 110) bytes -> (n, 256) float32, as ``gguf.quants.Q3_K`` decodes them."""
    n = data.shape[0]
    hmask, qs, s, d = data[:, :32], data[:, 32:96], data[:, 96:108], fp16_from_bytes(data[:, 108:110])
    low = np.concatenate([s[:, :8] & 0x0F, s[:, :8] >> 4], axis=1)
    high = ((s[:, 8:12].reshape(n, 1, 4) >> (2 * np.arange(4, dtype=np.uint8)).reshape(1, 4, 1)) & 3).reshape(n, 16)
    scales = ((low | (high << 4)).astype(np.int8) - np.int8(32)).astype(np.float32)
    hbit = ((hmask.reshape(n, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)) & 1).reshape(n, 256)
    q = _uncrumb(qs).astype(np.int8) - ((hbit ^ 1) << 2).astype(np.int8)
    return ((d * scales)[..., None] * q.reshape(n, 16, 16).astype(np.float32)).reshape(n, QK_K)


def quantize_q4_k(b: np.ndarray, out: np.ndarray) -> None:
    """(n, 256) float32 -> (n, 144) bytes of ``block_q4_K``, written into ``out``."""
    n = b.shape[0]
    d16, dmin16, sc, mn, q = _affine_blocks(b, 32, 15, 63, GRID["q4_k"])
    qs = (q[:, 0::2] | (q[:, 1::2] << 4)).reshape(n, 128)  # chunk i: sub-block 2i low, 2i+1 high
    out[:] = np.concatenate([fp16_bytes(d16), fp16_bytes(dmin16), _pack_scales_mins_6bit(sc, mn), qs], axis=1)


def quantize_q5_k(b: np.ndarray, out: np.ndarray) -> None:
    """(n, 256) float32 -> (n, 176) bytes of ``block_q5_K``, written into ``out``."""
    n = b.shape[0]
    d16, dmin16, sc, mn, q = _affine_blocks(b, 32, 31, 63, GRID["q5_k"])
    low = q & 0x0F
    qs = (low[:, 0::2] | (low[:, 1::2] << 4)).reshape(n, 128)
    out[:] = np.concatenate([fp16_bytes(d16), fp16_bytes(dmin16), _pack_scales_mins_6bit(sc, mn),
                             _bit_planes(q, 4), qs], axis=1)


def dequantize_q5_k(data: np.ndarray) -> np.ndarray:
    """(n, 176) bytes -> (n, 256) float32, as ``gguf.quants.Q5_K`` decodes them."""
    n = data.shape[0]
    d, dmin = fp16_from_bytes(data[:, :2]), fp16_from_bytes(data[:, 2:4])
    sc, mn = _unpack_scales_mins_6bit(data[:, 4:16])
    qh, qs = data[:, 16:48], data[:, 48:]
    low = ((qs.reshape(n, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)) & 0x0F).reshape(n, 8, 32)
    high = (qh.reshape(n, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)) & 1
    q = (low | (high << 4)).astype(np.float32)
    return ((d * sc.astype(np.float32))[..., None] * q - (dmin * mn.astype(np.float32))[..., None]).reshape(n, QK_K)


def dequantize_q4_k(data: np.ndarray) -> np.ndarray:
    """(n, 144) bytes -> (n, 256) float32, as ``gguf.quants.Q4_K`` decodes them."""
    n = data.shape[0]
    d, dmin = fp16_from_bytes(data[:, :2]), fp16_from_bytes(data[:, 2:4])
    sc, mn = _unpack_scales_mins_6bit(data[:, 4:16])
    qs = data[:, 16:].reshape(n, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
    q = (qs & 0x0F).reshape(n, 8, 32).astype(np.float32)
    scale = (d * sc.astype(np.float32))[..., None]
    offset = (dmin * mn.astype(np.float32))[..., None]
    return (scale * q - offset).reshape(n, QK_K)


def quantize_q6_k(b: np.ndarray, out: np.ndarray) -> None:
    """(n, 256) float32 -> (n, 210) bytes of ``block_q6_K``, written into ``out``."""
    n = b.shape[0]
    d16, sc, q = _symmetric_blocks(b, 32, 128, GRID["q6_k"])
    q = q.reshape(n, 2, 2, 64)
    ql = ((q[:, :, 0] & 0x0F) | ((q[:, :, 1] & 0x0F) << 4)).reshape(n, 128)
    hi = ((q.reshape(n, 2, 4, 32) >> 4) & 0x03) << np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    qh = np.bitwise_or.reduce(hi, axis=2).reshape(n, 64)
    out[:] = np.concatenate([ql, qh, sc.view(np.uint8), fp16_bytes(d16)], axis=1)


def dequantize_q6_k(data: np.ndarray) -> np.ndarray:
    """(n, 210) bytes -> (n, 256) float32, as ``gguf.quants.Q6_K`` decodes them."""
    n = data.shape[0]
    ql, qh = data[:, :128], data[:, 128:192]
    scales = data[:, 192:208].view(np.int8).astype(np.float32)
    d = fp16_from_bytes(data[:, 208:210])
    lo = (ql.reshape(n, 2, 1, 64) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)) & 0x0F
    hi = (qh.reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)) & 0x03
    q = (lo.reshape(n, 8, 32) | (hi.reshape(n, 8, 32) << 4)).astype(np.int8) - np.int8(32)
    return ((d * scales).reshape(n, 16, 1) * q.reshape(n, 16, 16).astype(np.float32)).reshape(n, QK_K)
