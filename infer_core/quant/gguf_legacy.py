"""GGUF legacy block formats Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, byte-exact with llama.cpp.

Blocks of 32 values, little-endian, fp16 scale ``d`` first. The quantizer uses the float32
``1/d`` (0 when ``d`` is 0); the stored and dequantizing ``d`` is the fp16-rounded one.
Nibble order: byte j holds element j in its low nibble and element j + 16 in its high one.
Each ``quantize_*`` takes float32 blocks (n, 32) and writes (n, type_size) bytes into ``out``;
each ``dequantize_*`` is its inverse, returning float32 (n, 32) with llama.cpp's arithmetic.
"""

from __future__ import annotations

import numpy as np

from infer_core.quant.common import add_half_away, fp16_from_bytes, inverse, row_max_min

QK = 32


# Reductions across a block run on the transpose (``row_max_min``); the per-element work stays
# in the block layout (n, 32), so codes land where the output bytes need them. Each quantizer
# writes its blocks into ``out`` (n, type_size).


def _signed_absmax(b: np.ndarray) -> np.ndarray:
    """Per block, the first element of largest magnitude, with its sign (llama.cpp's ``max``)."""
    mx, mn = row_max_min(b)
    value = np.where(-mn > mx, mn, mx)
    tie = -mn == mx  # +a and -a both present, or all zeros: the first one decides
    if tie.any():
        idx = np.flatnonzero(tie)
        sub = b[idx]
        value[idx] = sub[np.arange(len(idx)), np.abs(sub).argmax(axis=1)]
    return value


def _scaled(b: np.ndarray, d: np.ndarray, shift: np.ndarray | None = None) -> np.ndarray:
    """float32 ``(b - shift) * (1/d)`` per block, ``1/d`` taken as 0 where ``d`` is 0.

    ``1/d`` is repeated out to one value per element: NumPy multiplies two same-shape arrays
    faster than it broadcasts a value over each 32-value row (numpy/numpy#13307).
    """
    v = np.repeat(inverse(d), b.shape[1]).reshape(b.shape)
    if shift is None:
        return np.multiply(b, v, out=v)
    v *= b - shift[:, None]
    return v


def _codes(v: np.ndarray, offset: float, bits: int) -> np.ndarray:
    """``min(2^bits - 1, trunc(v + offset))`` as uint8 (llama.cpp's cast), in place on ``v``.

    ``v + offset`` lies in [0, 2^bits + 0.5], so the truncated code is at most 2^bits and
    ``q - (q >> bits)`` clamps exactly that one value (an integer op, far cheaper than ``np.minimum``).
    """
    v += np.float32(offset)
    q = v.astype(np.uint8)  # the cast truncates
    q -= q >> bits
    return q


def _nibbles(q: np.ndarray, out: np.ndarray) -> None:
    """(n, 32) 4-bit codes -> (n, 16) bytes: element j low, element j + 16 high.

    Done eight bytes at a time on uint64 words (a code < 16 shifted left by 4 stays in its
    byte), on 1-D strided views, which NumPy runs far faster than (n, 2) slices.
    """
    words = q.view(np.uint64).reshape(-1)  # per block: elements 0-7, 8-15, 16-23, 24-31
    packed = np.empty((q.shape[0], 2), dtype=np.uint64)
    for half in (0, 1):
        np.left_shift(words[2 + half :: 4], np.uint64(4), out=packed[:, half])
        packed[:, half] |= words[half::4]
    out[:] = packed.view(np.uint8)


def _unnibble(qs: np.ndarray) -> np.ndarray:
    """(n, 16) bytes -> (n, 32) 4-bit codes."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _high_bits(q: np.ndarray) -> np.ndarray:
    """Bit 4 of each of 32 codes, as a little-endian uint32: (n, 4) bytes."""
    return np.packbits(q >> 4, axis=1, bitorder="little")


def _unhigh_bits(qh: np.ndarray) -> np.ndarray:
    return np.unpackbits(qh, axis=1, bitorder="little") << 4


def _put_f16(out: np.ndarray, values: np.ndarray) -> None:
    """Store float32 ``values`` (n,) as IEEE half into the 2-byte column ``out`` (n, 2)."""
    np.copyto(out.view("<f2")[:, 0], values, casting="same_kind")


def quantize_q8_0(b: np.ndarray, out: np.ndarray) -> None:
    mx, mn = row_max_min(b)
    d = np.maximum(mx, -mn) / np.float32(127) + np.float32(0)  # +0 turns -0.0 into 0.0
    _put_f16(out[:, :2], d)
    np.copyto(out[:, 2:].view(np.int8), add_half_away(_scaled(b, d)), casting="unsafe")  # cast truncates


def dequantize_q8_0(data: np.ndarray) -> np.ndarray:
    return data[:, 2:].view(np.int8).astype(np.float32) * fp16_from_bytes(data[:, :2])


def quantize_q4_0(b: np.ndarray, out: np.ndarray) -> None:
    d = _signed_absmax(b) / np.float32(-8)
    _put_f16(out[:, :2], d)
    _nibbles(_codes(_scaled(b, d), 8.5, 4), out[:, 2:])


def dequantize_q4_0(data: np.ndarray) -> np.ndarray:
    return fp16_from_bytes(data[:, :2]) * (_unnibble(data[:, 2:]).astype(np.float32) - np.float32(8))


def quantize_q4_1(b: np.ndarray, out: np.ndarray) -> None:
    mx, mn = row_max_min(b)
    d = (mx - mn) / np.float32(15)
    _put_f16(out[:, :2], d)
    _put_f16(out[:, 2:4], mn)
    _nibbles(_codes(_scaled(b, d, mn), 0.5, 4), out[:, 4:])


def dequantize_q4_1(data: np.ndarray) -> np.ndarray:
    d, m = fp16_from_bytes(data[:, :2]), fp16_from_bytes(data[:, 2:4])
    return d * _unnibble(data[:, 4:]).astype(np.float32) + m


def quantize_q5_0(b: np.ndarray, out: np.ndarray) -> None:
    d = _signed_absmax(b) / np.float32(-16)
    q = _codes(_scaled(b, d), 16.5, 5)
    _put_f16(out[:, :2], d)
    out[:, 2:6] = _high_bits(q)
    _nibbles(q & 0x0F, out[:, 6:])


def dequantize_q5_0(data: np.ndarray) -> np.ndarray:
    q = _unnibble(data[:, 6:]) | _unhigh_bits(data[:, 2:6])
    return fp16_from_bytes(data[:, :2]) * (q.astype(np.float32) - np.float32(16))


def quantize_q5_1(b: np.ndarray, out: np.ndarray) -> None:
    mx, mn = row_max_min(b)
    d = (mx - mn) / np.float32(31)
    q = _codes(_scaled(b, d, mn), 0.5, 5)
    _put_f16(out[:, :2], d)
    _put_f16(out[:, 2:4], mn)
    out[:, 4:8] = _high_bits(q)
    _nibbles(q & 0x0F, out[:, 8:])


def dequantize_q5_1(data: np.ndarray) -> np.ndarray:
    d, m = fp16_from_bytes(data[:, :2]), fp16_from_bytes(data[:, 2:4])
    q = _unnibble(data[:, 8:]) | _unhigh_bits(data[:, 4:8])
    return d * q.astype(np.float32) + m
