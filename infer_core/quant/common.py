"""Helpers every quantizer shares: input checks, exact rounding, row statistics, fp16 fields."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np


def as_rows(x: np.ndarray, multiple: int, name: str, check: bool = True) -> np.ndarray:
    """``x`` as float32 rows (last axis), checked: row length a multiple of ``multiple`` and,
    unless ``check`` is false (the caller checks chunk by chunk), all values finite."""
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[-1] % multiple:
        raise ValueError(f"{name}: the last axis ({x.shape[-1] if x.ndim else 'scalar'}) must be a "
                         f"multiple of {multiple}")
    x = x.astype(np.float32, copy=False)
    if check:
        check_finite(x)
    return x


#: Values a block quantizer handles at once (512 KiB of float32): the chunk and its temporaries
#: stay in cache from one pass to the next.
BLOCK_CHUNK_ELEMENTS = 1 << 17


def for_block_chunks(n_blocks: int, block: int, work: Callable[[slice], None], threads: int = 1,
                     elements: int | None = None) -> None:
    """Call ``work`` on consecutive slices of blocks holding about ``elements`` values (default
    ``BLOCK_CHUNK_ELEMENTS``),
    on ``threads`` threads (NumPy releases the GIL inside its array operations; the slices must
    write disjoint outputs). The first exception raised by a slice is raised here."""
    step = max(1, (elements or BLOCK_CHUNK_ELEMENTS) // block)
    slices = [slice(start, min(n_blocks, start + step)) for start in range(0, n_blocks, step)]
    if threads <= 1 or len(slices) == 1:
        for sl in slices:
            work(sl)
        return
    with ThreadPoolExecutor(min(threads, len(slices))) as pool:
        for _ in pool.map(work, slices):
            pass


def check_finite(x: np.ndarray) -> None:
    """Raise ``ValueError`` naming the first row (index along the leading axes) holding NaN or inf."""
    bad = ~np.isfinite(x)
    if bad.any():
        flat = bad.reshape(-1, x.shape[-1]) if x.ndim > 1 else bad.reshape(1, -1)
        row = int(np.flatnonzero(flat.any(axis=1))[0])
        col = int(np.flatnonzero(flat[row])[0])
        where = tuple(int(i) for i in np.unravel_index(row, x.shape[:-1])) if x.ndim > 1 else (0,)
        value = x.reshape(-1, x.shape[-1])[row, col]
        name = where[0] if len(where) == 1 else where
        raise ValueError(f"non-finite input: row {name} holds {value} at column {col}")


#: The largest float32 below 0.5: trunc(v + copysign(HALF_DOWN, v)) is C's roundf(v) for every
#: float32 v (a plain 0.5 would send 0.49999997 to 1).
HALF_DOWN = np.nextafter(np.float32(0.5), np.float32(0))
_SIGN_BIT = np.int32(-(2**31))
_HALF_DOWN_BITS = HALF_DOWN.view(np.int32)


def add_half_away(v: np.ndarray) -> np.ndarray:
    """``v += copysign(HALF_DOWN, v)`` in place (float32): truncating it then gives ``roundf(v)``.

    The sign is moved with integer ops on the bits, several times faster than ``np.copysign``.
    """
    half = v.view(np.int32) & _SIGN_BIT
    half |= _HALF_DOWN_BITS
    v += half.view(np.float32)
    return v


def round_half_away(v: np.ndarray) -> np.ndarray:
    """C's ``roundf`` (ties away from zero), exactly, in place on float32 ``v``."""
    return np.trunc(add_half_away(v), out=v)


def inverse(scale: np.ndarray) -> np.ndarray:
    """float32 ``1 / scale``, and 0 where the scale is 0 (an all-zero block quantizes to 0)."""
    inv = np.zeros_like(scale, dtype=np.float32)
    np.divide(np.float32(1), scale, out=inv, where=scale != 0)
    return inv


def row_max_min(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row max and min of a 2-D array (NaN propagates).

    NumPy's ``max(axis=1)`` pays a per-row overhead. Rows shorter than 64 are reduced on the
    transpose, where the reduction streams along contiguous memory; longer rows of a contiguous
    array by ``reduceat`` over the flat array, which beat ``axis=1`` at every length measured
    (NumPy 2.4, per 2 MiB: 0.45 vs 1.0 ms at 64 values, 0.28 vs 0.56 at 128, 66 vs 72 us at 4096).
    """
    n, length = b.shape
    if length < 64:
        if b.dtype == np.float32 and length % 4 == 0 and b.flags.c_contiguous:
            return _short_row_max_min(b)
        t = np.ascontiguousarray(b.T)
        return t.max(axis=0), t.min(axis=0)
    if n and b.flags.c_contiguous:
        flat, starts = b.reshape(-1), np.arange(0, b.size, length)
        return np.maximum.reduceat(flat, starts), np.minimum.reduceat(flat, starts)
    return b.max(axis=1), b.min(axis=1)


def _short_row_max_min(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``row_max_min`` of contiguous float32 rows of 4k values, transposed 16 bytes at a time.

    Moving four values per item makes the transposing copy about 3x cheaper; row ``j`` of the
    result holds values ``4j .. 4j+3`` of every input row, so after the column reductions two
    pairwise steps fold each input row's four partial results into one.
    """
    t = np.ascontiguousarray(b.view(np.complex128).T).view(np.float32)  # (length/4, 4n)
    mx, mn = t.max(axis=0), t.min(axis=0)
    for _ in range(2):
        mx, mn = np.maximum(mx[0::2], mx[1::2]), np.minimum(mn[0::2], mn[1::2])
    return mx, mn


def fp16_bytes(values: np.ndarray) -> np.ndarray:
    """float32 values (n,) or (n, 1) rounded to IEEE half, as (n, 2) little-endian bytes."""
    return values.astype("<f2").reshape(-1, 1).view(np.uint8)


def fp16_from_bytes(data: np.ndarray) -> np.ndarray:
    """(n, 2) little-endian bytes as float32 (n, 1)."""
    return np.ascontiguousarray(data).view("<f2").astype(np.float32)


#: Rows at least this long gain from :func:`row_buffers`; shorter ones lose (measured, NumPy 2.4).
ROW_BUFFER_MIN = 512


@contextmanager
def row_buffers(row_len: int) -> Iterator[None]:
    """Ufunc buffers no longer than a row while the block runs, for per-row broadcasts.

    NumPy's buffered iterator refills its buffer for an operand broadcast along the rows, as in
    ``x * scale[:, None]`` (numpy/numpy#13307; fixed in numpy/numpy#32595), which makes it about
    2x slower than ``x * scalar``. With a buffer no longer than a row (and a multiple of 16, as
    NumPy requires) it runs one unbuffered loop per row, as fast as the scalar case. Rows shorter
    than ``ROW_BUFFER_MIN`` keep the default, which is faster for them. Scoped by ``np.errstate``.
    """
    with np.errstate():
        if row_len >= ROW_BUFFER_MIN:
            np.setbufsize(min(np.getbufsize(), row_len // 16 * 16))
        yield
