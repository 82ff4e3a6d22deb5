"""Knobs of the matmul experiment, under ``matmul.*``: each default written once, here.

``size`` acts only on ``shape=square``; ``d_model``, ``tokens`` and ``ffn_mult`` only on the
transformer ops (:meth:`MatmulConfig.inactive`), so a row carries only the knobs that shaped it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from experiments.framework.spec import DType, Knobs, knob, require, require_positive
from infer_core.matmul import OPS, WEIGHTS, GemmShape, op_shape

KEY = "matmul"
Shape = Enum("Shape", {name: name for name in OPS})
Weights = Enum("Weights", {name: name for name in WEIGHTS})
OP_KNOBS = frozenset({"d_model", "tokens", "ffn_mult"})


@dataclass
class MatmulConfig(Knobs):
    """One product Y = X @ W, timed and placed on the machine's roofline."""

    shape: Shape = knob(Shape.square, "`square` (n×n×n) or a transformer op: `qkv`, `attn_out`, `ffn_up`, `ffn_down`")
    size: int = knob(1024, "square: n")
    d_model: int = knob(4096, "ops: model width d of X[tokens, d]")
    tokens: int = knob(1, "ops: rows of X (1 token: a decode GEMV; more: a prefill GEMM)")
    ffn_mult: int = knob(4, "ops: FFN width = ffn_mult · d_model")
    dtype: DType = knob(DType.float32, "float32 or float64")
    weights: list[Weights] = knob(list(Weights), "variants: float weights (`fp32`), or int8 weights dequantized "
                                                 "before a float GEMM (`int8_dequant`)")

    def __post_init__(self) -> None:
        require_positive(KEY, self, "size", "d_model", "tokens", "ffn_mult")
        names = [w.value for w in self.weights]
        require(len(names) > 0, f"{KEY}.weights is empty: name at least one of {', '.join(WEIGHTS)}")
        require(len(set(names)) == len(names), f"{KEY}.weights={names} repeats a variant")

    def inactive(self) -> frozenset[str]:
        return OP_KNOBS if self.shape is Shape.square else frozenset({"size"})

    @property
    def gemm(self) -> GemmShape:
        return op_shape(self.shape.value, self.size, self.d_model, self.tokens, self.ffn_mult)
