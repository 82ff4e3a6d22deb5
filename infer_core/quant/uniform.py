"""Uniform b-bit quantization (b = 2..8) of a weight matrix W[out, in].

Schemes: ``symmetric`` (scale = absmax / (2^(b-1) - 1), levels ±(2^(b-1) - 1)), ``affine``
(PyTorch's rule: the range is extended to include zero, so zero is exact, and the zero point
is clamped to the code range), and ``naive_minmax``, the classic demo's rule (min/max without
extending the range), kept as a baseline: it breaks on all-positive or all-negative rows.
Granularity: ``per_tensor``, ``per_channel`` (one scale per output row), ``per_group``
(``group_size`` consecutive elements of a row). Scales (and zero points) are stored in
``scale_dtype`` and the codes are quantized with the stored scale, so what is stored is what
dequantizes. Codes are bit-packed (:mod:`infer_core.quant.packing`); symmetric codes are
two's complement, affine ones unsigned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infer_core.quant.common import as_rows, check_finite, inverse, row_buffers, row_max_min
from infer_core.quant.packing import pack_codes, unpack_codes

#: Values quantized at once (2 MiB of float32): few enough NumPy calls per value, and the chunk
#: with its scratch still in cache when the next pass reads it.
CHUNK_ELEMENTS = 1 << 19

SCHEMES = ("symmetric", "affine", "naive_minmax")
GRANULARITIES = ("per_tensor", "per_channel", "per_group")
EPS32 = np.finfo(np.float32).eps


@dataclass(frozen=True)
class UniformTensor:
    """A uniformly quantized matrix: packed codes plus one scale (and zero point) per group."""

    shape: tuple[int, int]
    bits: int
    scheme: str
    granularity: str
    group_size: int  # values per group (the whole tensor, a row, or ``group_size``)
    codes: np.ndarray  # uint8 bitstream
    scales: np.ndarray  # (n_groups,) in the scale dtype
    zeros: np.ndarray | None  # (n_groups,) zero points in the scale dtype, affine schemes only

    @property
    def nbytes(self) -> int:
        """True storage: packed codes + scales + zero points."""
        return self.codes.nbytes + self.scales.nbytes + (self.zeros.nbytes if self.zeros is not None else 0)

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.nbytes / (self.shape[0] * self.shape[1])

    def dequantize(self, dtype: str = "float32") -> np.ndarray:
        """Reconstruction ``(q - zero) * scale`` in ``dtype`` (float32 by default)."""
        rows, cols = self.shape
        q = unpack_codes(self.codes, self.bits, rows * cols)
        if self.scheme == "symmetric":
            q = _sign_extend(q, self.bits)
        q = _grouped(q.reshape(rows, cols), self.granularity, self.group_size).astype(dtype)
        per_row = _per_row(self.scales.astype(dtype), q.shape[0], self.granularity)
        with row_buffers(q.shape[1]):
            if self.zeros is not None:
                q -= _per_row(self.zeros.astype(dtype), q.shape[0], self.granularity)[:, None]
            q *= per_row[:, None]
        return q.reshape(rows, cols)


def _sign_extend(q: np.ndarray, bits: int) -> np.ndarray:
    """b-bit two's complement codes (uint8) -> int8 values."""
    if bits == 8:
        return q.view(np.int8)
    return (q.astype(np.int16) - ((q >> (bits - 1)) << bits)).astype(np.int8)


def _grouped(w: np.ndarray, granularity: str, group_size: int) -> np.ndarray:
    """W (rows, cols) as 2-D data whose rows each belong to one group (per_tensor: all to group 0)."""
    if granularity == "per_group":
        return w.reshape(-1, group_size)
    return w


def _per_row(values: np.ndarray, n_rows: int, granularity: str) -> np.ndarray:
    """Per-group values expanded to one per data row."""
    return np.broadcast_to(values, (n_rows,)) if granularity == "per_tensor" else values


def _params(w: np.ndarray, mx: np.ndarray, mn: np.ndarray, bits: int, scheme: str, scale_dtype: np.dtype):
    """(stored scale, stored zero point or None, float32 scale, float32 zero point or None, clip).

    ``clip`` says whether a symmetric code can pass the top level (only when storing the scale
    rounded it down by more than half a level). NaN or inf in the data shows up here, through
    the max and min, and is reported with its row.
    """
    top = 2**bits - 1
    clip = False
    if scheme == "symmetric":
        qmax = 2 ** (bits - 1) - 1
        absmax = np.maximum(mx, -mn)
        scale = absmax / np.float32(qmax)
        zero = None
    else:
        lo, hi = (np.minimum(mn, 0), np.maximum(mx, 0)) if scheme == "affine" else (mn, mx)
        scale = np.maximum((hi - lo) / np.float32(top), EPS32)
        zero = lo  # turned into an integer zero point once the scale is stored
    with np.errstate(over="ignore"):  # an overflowing scale is reported just below
        stored = scale.astype(scale_dtype)
    s = stored.astype(np.float32)
    if not np.isfinite(s).all():
        check_finite(w)  # raises if the data holds NaN or inf
        row = int(np.flatnonzero(~np.isfinite(s))[0])
        raise ValueError(f"a scale ({scale[row]:.3g}) overflows {scale_dtype.name}: use scale_dtype=float32")
    if zero is None:
        clip = bool((absmax > (qmax + np.float32(0.5)) * s).any())
        return stored, None, s, None, clip
    zp = np.clip(np.rint(-zero / s), 0, top).astype(np.float32)
    return stored, zp.astype(scale_dtype), s, zp, clip


def _codes(d: np.ndarray, s: np.ndarray, zp: np.ndarray | None, bits: int, clip: bool, out: np.ndarray,
           scratch: np.ndarray) -> None:
    """Quantize data rows ``d`` with per-row scale ``s`` (and zero point) into ``out`` (uint8)."""
    v = np.multiply(d, inverse(s)[:, None], out=scratch[: len(d)])
    np.rint(v, out=v)  # half to even, as torch.round
    if zp is None:
        if clip:
            qmax = 2 ** (bits - 1) - 1
            np.clip(v, -qmax, qmax, out=v)
        np.copyto(out.view(np.int8), v, casting="unsafe")  # two's complement byte
        if bits < 8:
            out &= np.uint8(2**bits - 1)
        return
    v += zp[:, None]
    np.clip(v, 0, 2**bits - 1, out=v)
    np.copyto(out, v, casting="unsafe")


def quantize_uniform(
    w: np.ndarray,
    bits: int = 8,
    scheme: str = "symmetric",
    granularity: str = "per_channel",
    group_size: int = 128,
    scale_dtype: str = "float16",
) -> UniformTensor:
    """Quantize a 2-D weight matrix W[out, in]; see the module docstring for the rules.

    Per-channel and per-group statistics are taken chunk by chunk, right before the chunk's
    codes, so each value is read from memory once.
    """
    if not 2 <= bits <= 8:
        raise ValueError(f"bits={bits} must be between 2 and 8")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r} must be one of {', '.join(SCHEMES)}")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity={granularity!r} must be one of {', '.join(GRANULARITIES)}")
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"W must be 2-D (out, in), got shape {w.shape}")
    if granularity == "per_group" and (group_size < 1 or w.shape[1] % group_size):
        raise ValueError(f"group_size={group_size} must divide the row length {w.shape[1]}")
    sdtype = np.dtype(scale_dtype)
    if sdtype not in (np.float16, np.float32):
        raise ValueError(f"scale_dtype={scale_dtype!r} must be float16 or float32")
    w = as_rows(w, 1, "quantize_uniform", check=False)  # NaN and inf show in the max/min (_params)
    rows, cols = w.shape
    d = _grouped(w, granularity, group_size)
    codes = np.empty(d.shape, dtype=np.uint8)
    step = max(1, CHUNK_ELEMENTS // d.shape[1])
    scratch = np.empty((min(step, len(d)), d.shape[1]), dtype=np.float32)
    per_chunk = []
    tensor = None
    if granularity == "per_tensor":
        tensor = _params(w, np.array([w.max()]), np.array([w.min()]), bits, scheme, sdtype)
    with row_buffers(d.shape[1]):
        for start in range(0, len(d), step):
            chunk = d[start : start + step]
            if tensor is None:
                params = _params(w, *row_max_min(chunk), bits, scheme, sdtype)
                per_chunk.append(params[:2])
                s, zp, clip = params[2:]
            else:
                s, zp, clip = tensor[2:]
            _codes(chunk, s, zp, bits, clip, codes[start : start + step], scratch)
    if tensor is not None:
        stored_scales, stored_zeros = tensor[:2]
    else:
        stored_scales = np.concatenate([p[0] for p in per_chunk])
        stored_zeros = None if scheme == "symmetric" else np.concatenate([p[1] for p in per_chunk])
    size = {"per_tensor": rows * cols, "per_channel": cols, "per_group": group_size}[granularity]
    return UniformTensor((rows, cols), bits, scheme, granularity, size, pack_codes(codes, bits),
                         stored_scales, stored_zeros)
