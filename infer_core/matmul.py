"""Matrix products of a transformer layer, and their exact FLOP and byte counts.

Every product is ``Y[M, N] = X[M, K] @ W[K, N]``. ``square`` is n×n×n; the transformer ops
take ``tokens`` rows of width ``d_model`` (1 token: a decode GEMV, more: a prefill GEMM):
``qkv`` (d → 3d), ``attn_out`` (d → d), ``ffn_up`` (d → ffn_mult·d), ``ffn_down`` (ffn_mult·d → d).
Weight-only INT8 (``int8_dequant``) stores W per output channel in int8 with fp16 scales and,
NumPy having no int8 GEMM, dequantizes it before a float GEMM.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infer_core.quant import UniformTensor, quantize_uniform

OPS = ("square", "qkv", "attn_out", "ffn_up", "ffn_down")
WEIGHTS = ("fp32", "int8_dequant")
SCALE_BYTES = 2  # fp16 per-channel scales of the int8 weights


@dataclass(frozen=True)
class GemmShape:
    """M, K, N of ``X[M, K] @ W[K, N]``."""

    m: int
    k: int
    n: int

    @property
    def flops(self) -> int:
        """2·M·N·K: one multiply and one add per term."""
        return 2 * self.m * self.n * self.k


def op_shape(op: str, size: int = 1024, d_model: int = 4096, tokens: int = 1, ffn_mult: int = 4) -> GemmShape:
    """The GEMM of ``op`` (see the module docstring)."""
    d, f = d_model, ffn_mult * d_model
    shapes = {
        "square": (size, size, size),
        "qkv": (tokens, d, 3 * d),
        "attn_out": (tokens, d, d),
        "ffn_up": (tokens, d, f),
        "ffn_down": (tokens, f, d),
    }
    if op not in shapes:
        raise ValueError(f"op={op!r} must be one of {', '.join(OPS)}")
    return GemmShape(*shapes[op])


def bytes_moved(shape: GemmShape, itemsize: int, weights: str = "fp32") -> dict[str, int]:
    """Bytes a product must move at the least, by operand: each read or written once.

    ``fp32``: read X and W, write Y. ``int8_dequant``: read the int8 W and its scales, write the
    dequantized W and read it back into the GEMM, read X, write Y.
    """
    m, k, n = shape.m, shape.k, shape.n
    parts = {"x": m * k * itemsize, "y": m * n * itemsize}
    if weights == "fp32":
        parts["w"] = k * n * itemsize
    elif weights == "int8_dequant":
        parts["w_int8"] = k * n + n * SCALE_BYTES
        parts["w_dequantized"] = 2 * k * n * itemsize
    else:
        raise ValueError(f"weights={weights!r} must be one of {', '.join(WEIGHTS)}")
    return parts


def weight_bytes(shape: GemmShape, itemsize: int, weights: str = "fp32") -> int:
    """Storage of W: float, or int8 codes plus fp16 scales."""
    return shape.k * shape.n * itemsize if weights == "fp32" else shape.k * shape.n + shape.n * SCALE_BYTES


def quantize_weights(w: np.ndarray) -> UniformTensor:
    """W[K, N] as int8 per output channel (a column of W, a row of W.T) with fp16 scales."""
    return quantize_uniform(np.ascontiguousarray(w.T), 8, "symmetric", "per_channel")


def dequant_matmul(x: np.ndarray, wq: UniformTensor) -> np.ndarray:
    """``x @ Ŵ``: dequantize the int8 weights in x's dtype, then a float GEMM."""
    return x @ wq.dequantize(x.dtype).T
