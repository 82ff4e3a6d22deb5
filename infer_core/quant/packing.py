"""Dense bit packing of integer codes: b bits each, little-endian, so b < 8 really saves memory."""

from __future__ import annotations

import numpy as np


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes that ``n`` codes of ``bits`` bits occupy."""
    return (n * bits + 7) // 8


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Flatten unsigned ``codes`` (< 2**bits) into a uint8 bitstream of ``packed_nbytes`` bytes.

    8 bits: the codes themselves (the result may share memory with ``codes``). 4 bits: two per
    byte, element 2i in the low nibble and 2i + 1 in the high one. Other widths: code i
    occupies bits ``i*b .. i*b + b - 1`` of the stream.
    """
    flat = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1)
    if bits == 8:
        return flat
    if bits == 4:
        n = len(flat)
        if n % 8:
            flat = np.concatenate([flat, np.zeros(-n % 8, np.uint8)])
        words = flat.view(np.uint64)  # little-endian: each 16-bit lane holds codes 2i (low) and 2i + 1
        words = words | (words >> np.uint64(4))  # lane's low byte: code 2i | code 2i + 1 << 4
        return words.view(np.uint16).astype(np.uint8)[: (n + 1) // 2]  # the cast keeps the low byte
    shifts = np.arange(bits, dtype=np.uint8)
    stream = ((flat[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(stream, bitorder="little")


def unpack_codes(data: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: the first ``n`` codes as uint8 (a view of ``data`` at 8 bits)."""
    if bits == 8:
        return data[:n]
    if bits == 4:
        return np.stack([data & 0x0F, data >> 4], axis=1).reshape(-1)[:n]
    stream = np.unpackbits(data, bitorder="little")[: n * bits].reshape(n, bits)
    return (stream << np.arange(bits, dtype=np.uint8)).sum(axis=1, dtype=np.uint8)
