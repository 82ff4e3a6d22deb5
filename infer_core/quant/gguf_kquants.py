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
refit (as llama.cpp's ``make_qkx2_quants`` / ``make_qx_quants`` do, unweighted here), then
quantizes the sub-block scales to 6 or 8 bits and recomputes the codes with the stored scales.
"""

from __future__ import annotations

import numpy as np

from infer_core.quant.common import fp16_bytes, fp16_from_bytes, round_half_away

QK_K = 256


def _nearest(v: np.ndarray) -> np.ndarray:
    return round_half_away(np.array(v, dtype=np.float32))


def _sum_last(a: np.ndarray) -> np.ndarray:
    """Sum over the last axis, kept with length 1, as one matrix-vector product: over rows of 16
    or 32 values BLAS is about 10x faster than NumPy's reduction."""
    n = a.shape[-1]
    rows = np.ascontiguousarray(a, dtype=np.float32).reshape(-1, n)
    return (rows @ np.ones(n, dtype=np.float32)).reshape(*a.shape[:-1], 1)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(np.broadcast(a, b).shape, dtype=np.float32)
    np.divide(a, b, out=out, where=b != 0)
    return out


def _fit_affine(x: np.ndarray, nmax: int, steps: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``x`` (..., n): scale a >= 0 and min m >= 0 with x ~ a*L - m, L in [0, nmax].

    Tries ``iscale = (nmax + k/10 - 1) / (max - min)`` for k in 0..steps and refits (a, m) by
    least squares on each candidate's codes, keeping the one with the smallest squared error.
    """
    lo = np.minimum(x.min(axis=-1, keepdims=True), 0)
    span = x.max(axis=-1, keepdims=True) - lo
    best_a = _safe_div(span, np.float32(nmax))
    best_m = -lo
    best_err = np.full(lo.shape, np.inf, dtype=np.float32)
    n = np.float32(x.shape[-1])
    sx = _sum_last(x)
    for k in range(steps + 1):
        iscale = _safe_div(np.float32(nmax - 1 + 0.1 * k), span)
        codes = np.clip(_nearest((x - lo) * iscale), 0, nmax)
        sl, sll = _sum_last(codes), _sum_last(codes * codes)
        slx = _sum_last(codes * x)
        det = n * sll - sl * sl
        a = _safe_div(n * slx - sl * sx, det)
        b = _safe_div(sx - a * sl, n)
        clamp = b > 0  # the stored min is subtracted, so the offset may not be positive
        a = np.where(clamp, _safe_div(slx, sll), a)
        b = np.where(clamp, 0, b)
        err = _sum_last((a * codes + b - x) ** 2)
        better = (err < best_err) & (a > 0)
        best_a, best_m, best_err = np.where(better, a, best_a), np.where(better, -b, best_m), np.where(
            better, err, best_err)
    return best_a[..., 0], best_m[..., 0]


def _fit_symmetric(x: np.ndarray, nmax: int) -> np.ndarray:
    """Per row: scale s with x ~ s*L, L in [-nmax, nmax-1], by a search around -nmax/max."""
    mx, mn = x.max(axis=-1, keepdims=True), x.min(axis=-1, keepdims=True)
    peak = np.where(-mn > mx, mn, mx)
    best_s = _safe_div(peak, np.float32(-nmax))
    best_err = _sum_last((x - np.clip(_nearest(x * _safe_div(np.float32(1), best_s)), -nmax, nmax - 1) * best_s) ** 2)
    for k in range(-9, 10):
        iscale = _safe_div(np.float32(-(nmax + 0.1 * k)), peak)
        codes = np.clip(_nearest(x * iscale), -nmax, nmax - 1)
        s = _safe_div(_sum_last(codes * x), _sum_last(codes * codes))
        err = _sum_last((x - s * codes) ** 2)
        better = err < best_err
        best_s, best_err = np.where(better, s, best_s), np.where(better, err, best_err)
    return best_s[..., 0]


def _affine_blocks(x: np.ndarray, nmax: int, smax: int) -> tuple[np.ndarray, ...]:
    """Sub-blocks ``x`` (n, m, k) fitted as d·sc·q − dmin·mn: codes q in [0, nmax], sub-block scales
    sc and mins mn in [0, smax] under fp16 super-block scales; returns (d16, dmin16, sc, mn, q)."""
    scale, mins = _fit_affine(x, nmax)
    d16 = (scale.max(axis=1) / np.float32(smax)).astype(np.float16).astype(np.float32)
    dmin16 = (mins.max(axis=1) / np.float32(smax)).astype(np.float16).astype(np.float32)
    sc = np.clip(_nearest(_safe_div(scale, d16[:, None])), 0, smax).astype(np.uint8)
    mn = np.clip(_nearest(_safe_div(mins, dmin16[:, None])), 0, smax).astype(np.uint8)
    eff_d = (d16[:, None] * sc.astype(np.float32))[..., None]
    eff_m = (dmin16[:, None] * mn.astype(np.float32))[..., None]
    q = np.clip(_nearest(_safe_div(x + eff_m, eff_d)), 0, nmax).astype(np.uint8)
    return d16, dmin16, sc, mn, q


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
    d16, dmin16, sc, mn, q = _affine_blocks(b.reshape(n, 16, 16), 3, 15)
    out[:] = np.concatenate([sc | (mn << 4), _crumbs(q.reshape(n, QK_K)), fp16_bytes(d16), fp16_bytes(dmin16)],
                            axis=1)


def dequantize_q2_k(data: np.ndarray) -> np.ndarray:
    """(n, 84) bytes -> (n, 256) float32, as ``gguf.quants.Q2_K`` decodes them."""
    n = data.shape[0]
    scales, d, dmin = data[:, :16], fp16_from_bytes(data[:, 80:82]), fp16_from_bytes(data[:, 82:84])
    q = _uncrumb(data[:, 16:80]).reshape(n, 16, 16).astype(np.float32)
    return ((d * (scales & 0x0F).astype(np.float32))[..., None] * q
            - (dmin * (scales >> 4).astype(np.float32))[..., None]).reshape(n, QK_K)


def _symmetric_blocks(x: np.ndarray, nmax: int, smax: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-blocks ``x`` (n, 16, 16) fitted as d·sc·q: codes q in [−nmax, nmax−1] stored as q + nmax,
    signed sub-block scales sc in [−smax, smax−1] under an fp16 super-block scale; returns (d16, sc, q)."""
    scale = _fit_symmetric(x, nmax)
    big = np.take_along_axis(scale, np.abs(scale).argmax(axis=1)[:, None], axis=1)[:, 0]
    iscale = _safe_div(np.float32(-smax), big)
    sc = np.clip(_nearest(iscale[:, None] * scale), -smax, smax - 1).astype(np.int8)
    d16 = _safe_div(np.float32(1), iscale).astype(np.float16).astype(np.float32)
    eff = (d16[:, None] * sc.astype(np.float32))[..., None]
    return d16, sc, (np.clip(_nearest(_safe_div(x, eff)), -nmax, nmax - 1) + nmax).astype(np.uint8)


def quantize_q3_k(b: np.ndarray, out: np.ndarray) -> None:
    """(n, 256) float32 -> (n, 110) bytes of ``block_q3_K``, written into ``out``."""
    n = b.shape[0]
    d16, sc, q = _symmetric_blocks(b.reshape(n, 16, 16), 4, 32)
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
    d16, dmin16, sc, mn, q = _affine_blocks(b.reshape(n, 8, 32), 15, 63)
    qs = (q[:, 0::2] | (q[:, 1::2] << 4)).reshape(n, 128)  # chunk i: sub-block 2i low, 2i+1 high
    out[:] = np.concatenate([fp16_bytes(d16), fp16_bytes(dmin16), _pack_scales_mins_6bit(sc, mn), qs], axis=1)


def quantize_q5_k(b: np.ndarray, out: np.ndarray) -> None:
    """(n, 256) float32 -> (n, 176) bytes of ``block_q5_K``, written into ``out``."""
    n = b.shape[0]
    d16, dmin16, sc, mn, q = _affine_blocks(b.reshape(n, 8, 32), 31, 63)
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
    d16, sc, q = _symmetric_blocks(b.reshape(n, 16, 16), 32, 128)
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
