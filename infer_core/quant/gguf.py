"""GGUF block formats behind two functions with the ``gguf`` package's layout and shapes.

``quantize_gguf(x, "q4_0")`` quantizes along the last axis and returns uint8 of shape
``(*rows, n / block * type_size)``; ``dequantize_gguf(data, "q4_0")`` returns float32 of
shape ``(*rows, n)``. Names are case-insensitive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from infer_core.quant import gguf_kquants as kq
from infer_core.quant import gguf_legacy as lg
from infer_core.quant.common import as_rows, check_finite, for_block_chunks

Encode = Callable[[np.ndarray, np.ndarray], None]  # (float32 blocks, out bytes) -> None
Decode = Callable[[np.ndarray], np.ndarray]  # bytes (n, type_size) -> float32 (n, block)


@dataclass(frozen=True)
class GGUFFormat:
    """One block format: values per block and bytes per block (``gguf``'s own table, ``GGML_QUANT_SIZES``), and
    its block codecs."""

    name: str
    quantize_blocks: Encode
    dequantize_blocks: Decode

    @property
    def block(self) -> int:
        return GGML_QUANT_SIZES[GGMLQuantizationType[self.name.upper()]][0]

    @property
    def type_size(self) -> int:
        return GGML_QUANT_SIZES[GGMLQuantizationType[self.name.upper()]][1]

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.type_size / self.block


GGUF_FORMATS: dict[str, GGUFFormat] = {
    f.name: f
    for f in (
        GGUFFormat("q8_0", lg.quantize_q8_0, lg.dequantize_q8_0),
        GGUFFormat("q4_0", lg.quantize_q4_0, lg.dequantize_q4_0),
        GGUFFormat("q4_1", lg.quantize_q4_1, lg.dequantize_q4_1),
        GGUFFormat("q5_0", lg.quantize_q5_0, lg.dequantize_q5_0),
        GGUFFormat("q5_1", lg.quantize_q5_1, lg.dequantize_q5_1),
        GGUFFormat("q2_k", kq.quantize_q2_k, kq.dequantize_q2_k),
        GGUFFormat("q3_k", kq.quantize_q3_k, kq.dequantize_q3_k),
        GGUFFormat("q4_k", kq.quantize_q4_k, kq.dequantize_q4_k),
        GGUFFormat("q5_k", kq.quantize_q5_k, kq.dequantize_q5_k),
        GGUFFormat("q6_k", kq.quantize_q6_k, kq.dequantize_q6_k),
    )
}


def gguf_format(fmt: str) -> GGUFFormat:
    """The format called ``fmt`` (case-insensitive); ``ValueError`` listing the known ones."""
    try:
        return GGUF_FORMATS[str(fmt).lower()]
    except KeyError:
        raise ValueError(f"unknown GGUF format {fmt!r}: choose one of {', '.join(GGUF_FORMATS)}") from None


def quantize_gguf(x: np.ndarray, fmt: str, threads: int = 1) -> np.ndarray:
    """Quantize ``x`` along its last axis to GGUF format ``fmt`` on ``threads`` threads; returns the
    bytes (uint8), the same for any thread count."""
    f = gguf_format(fmt)
    x = as_rows(x, f.block, f"quantize_gguf({f.name})", check=False)
    blocks = x.reshape(-1, f.block)
    out = np.empty((blocks.shape[0], f.type_size), dtype=np.uint8)

    def work(sl: slice) -> None:
        # Checked before quantizing: a NaN would only warn later. The sequential read also pulls
        # the chunk into cache for the transposing reads that follow, so it costs next to nothing
        # (reading the non-finite d back from the output instead was 9% slower in total).
        if not np.isfinite(blocks[sl]).all():
            check_finite(x)  # names the first bad row
        f.quantize_blocks(blocks[sl], out[sl])

    for_block_chunks(len(blocks), f.block, work, threads, kq.CHUNK_ELEMENTS if f.block == kq.QK_K else None)
    return out.reshape(*x.shape[:-1], x.shape[-1] // f.block * f.type_size)


def dequantize_gguf(data: np.ndarray, fmt: str, threads: int = 1) -> np.ndarray:
    """Decode GGUF bytes of format ``fmt`` (last axis) to float32 values, on ``threads`` threads."""
    f = gguf_format(fmt)
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim == 0 or data.shape[-1] % f.type_size:
        raise ValueError(f"dequantize_gguf({f.name}): need uint8 with a last axis that is a multiple of "
                         f"{f.type_size}, got {data.dtype} {data.shape}")
    blocks = data.reshape(-1, f.type_size)
    out = np.empty((blocks.shape[0], f.block), dtype=np.float32)

    def work(sl: slice) -> None:
        out[sl] = f.dequantize_blocks(blocks[sl])

    for_block_chunks(len(blocks), f.block, work, threads)
    return out.reshape(*data.shape[:-1], data.shape[-1] // f.type_size * f.block)
