"""One front for every quantization method: a spec in, a tensor that knows its size and decodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from infer_core.quant.gguf import GGUF_FORMATS, dequantize_gguf, quantize_gguf
from infer_core.quant.nf4 import quantize_nf4
from infer_core.quant.uniform import quantize_uniform

FORMATS = ("uniform", *GGUF_FORMATS, "nf4")


class QuantizedTensor(Protocol):
    """What every quantized tensor offers."""

    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int: ...

    @property
    def bits_per_weight(self) -> float: ...

    def dequantize(self) -> np.ndarray: ...


@dataclass(frozen=True)
class GGUFTensor:
    """GGUF block bytes of one format, as ``quantize_gguf`` returns them."""

    fmt: str
    data: np.ndarray
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.nbytes / int(np.prod(self.shape))

    def dequantize(self) -> np.ndarray:
        return dequantize_gguf(self.data, self.fmt)


@dataclass(frozen=True)
class QuantSpec:
    """A quantization method: ``format`` (uniform, a GGUF name or nf4) and the uniform knobs."""

    format: str = "uniform"
    bits: int = 8
    scheme: str = "symmetric"
    granularity: str = "per_channel"
    group_size: int = 128
    scale_dtype: str = "float16"

    @property
    def label(self) -> str:
        """A short name for plots and CSV rows: ``int8 symmetric per_group g128``, ``q4_0``."""
        if self.format != "uniform":
            return self.format
        group = f" g{self.group_size}" if self.granularity == "per_group" else ""
        return f"int{self.bits} {self.scheme} {self.granularity}{group}"

    @property
    def block(self) -> int:
        """Values the row length must be a multiple of."""
        if self.format in GGUF_FORMATS:
            return GGUF_FORMATS[self.format].block
        if self.format == "nf4":
            return 64
        return self.group_size if self.granularity == "per_group" else 1


def quantize(w: np.ndarray, spec: QuantSpec) -> QuantizedTensor:
    """Quantize ``w`` with the method ``spec`` describes."""
    if spec.format == "uniform":
        return quantize_uniform(w, spec.bits, spec.scheme, spec.granularity, spec.group_size, spec.scale_dtype)
    if spec.format == "nf4":
        return quantize_nf4(w, spec.scale_dtype)
    if spec.format in GGUF_FORMATS:
        return GGUFTensor(spec.format, quantize_gguf(w, spec.format), tuple(np.shape(w)))
    raise ValueError(f"format={spec.format!r} must be one of {', '.join(FORMATS)}")
