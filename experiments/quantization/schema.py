"""Knobs of the quantization experiment, under ``quant.*``: each default written once, here.

The uniform knobs (``bits``, ``scheme``, ``granularity``, ``group_size``) act only on
``format=uniform``, ``group_size`` only per group, ``scale_dtype`` on uniform and nf4: a row
carries only the knobs that acted (:meth:`QuantConfig.inactive`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from experiments.framework.spec import Knobs, knob, require, require_positive
from infer_core.quant import DISTRIBUTIONS, FORMATS, QuantSpec

KEY = "quant"
MAX_PAIRS = 10_000
Format = Enum("Format", {name: name for name in FORMATS})
Distribution = Enum("Distribution", {name: name for name in DISTRIBUTIONS})
UNIFORM_ONLY = frozenset({"bits", "scheme", "granularity", "group_size"})


class Scheme(Enum):
    symmetric = "symmetric"
    affine = "affine"  # zero always exact
    naive_minmax = "naive_minmax"  # the classic demo's min/max rule, kept as a baseline


class Granularity(Enum):
    per_tensor = "per_tensor"
    per_channel = "per_channel"
    per_group = "per_group"


class ScaleDType(Enum):
    float16 = "float16"
    float32 = "float32"


@dataclass
class QuantConfig(Knobs):
    """Quantize one weight matrix W[rows, cols] with one method; measure storage, error, fidelity, speed."""

    rows: int = knob(512, "output channels of the weight matrix W[out, in]")
    cols: int = knob(512, "input features of W")
    format: Format = knob(Format.uniform, "`uniform`, a GGUF block format (`q8_0` `q4_0` `q4_1` `q5_0` `q5_1`, "
                                          "K-quants `q2_k` `q3_k` `q4_k` `q5_k` `q6_k`), or `nf4`")
    bits: int = knob(8, "uniform: 2 to 8 bits, codes bit-packed (two per byte at 4 bits)")
    scheme: Scheme = knob(Scheme.symmetric, "uniform: `symmetric`, `affine` (zero always exact), `naive_minmax` "
                                            "(the classic demo's rule, a baseline that breaks on all-positive rows)")
    granularity: Granularity = knob(Granularity.per_channel, "uniform: `per_tensor`, `per_channel` (one scale per "
                                                             "output row), `per_group`")
    group_size: int = knob(128, "uniform per_group: values sharing a scale")
    scale_dtype: ScaleDType = knob(ScaleDType.float16, "uniform and nf4: storage of scales and zero points")
    distribution: Distribution = knob(Distribution.gaussian, "`gaussian`, `demo_matrix`, `student_t`, "
                                                             "`outlier_channels`, `layernorm`")
    n_inputs: int = knob(64, "random inputs x for the cosine of W·x vs Ŵ·x")
    sample_pairs: int = knob(MAX_PAIRS, f"(original, dequantized) pairs kept for the report, at most {MAX_PAIRS}")

    def __post_init__(self) -> None:
        require_positive(KEY, self, "rows", "cols", "n_inputs", "group_size")
        require_positive(KEY, self, "sample_pairs", minimum=0)
        require(self.sample_pairs <= MAX_PAIRS, f"{KEY}.sample_pairs={self.sample_pairs} must be <= {MAX_PAIRS}")
        fmt = self.format.value
        if fmt == "uniform":
            require(2 <= self.bits <= 8, f"{KEY}.bits={self.bits} must be between 2 and 8")
            if self.granularity is Granularity.per_group:
                require(self.cols % self.group_size == 0,
                        f"{KEY}.group_size={self.group_size} must divide {KEY}.cols={self.cols}")
        else:
            block = self.spec.block
            require(self.cols % block == 0,
                    f"{KEY}.cols={self.cols} must be a multiple of {block} for {KEY}.format={fmt}")

    def inactive(self) -> frozenset[str]:
        fmt = self.format.value
        if fmt == "uniform":
            return frozenset() if self.granularity is Granularity.per_group else frozenset({"group_size"})
        return UNIFORM_ONLY if fmt == "nf4" else UNIFORM_ONLY | {"scale_dtype"}

    @property
    def spec(self) -> QuantSpec:
        return QuantSpec(self.format.value, self.bits, self.scheme.value, self.granularity.value,
                         self.group_size, self.scale_dtype.value)
