"""The quantization experiment: quantize one weight matrix with one method, measure what it costs.

Rows report storage (true bytes, bits per weight), reconstruction error (GUIDE §7 metrics, in
float64), the fidelity of layer outputs W·x, and quantize/dequantize speed. Sidecars hold the
per-channel errors and a bounded sample of (original, dequantized) pairs for the report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum

import numpy as np

from experiments.base import BenchConfig, Experiment, VariantResult, check_fits, require, require_positive, run_variant
from infer_core.quant import (
    DISTRIBUTIONS,
    FORMATS,
    QuantSpec,
    channel_errors,
    error_metrics,
    output_cosine,
    quantize,
    synthetic_weights,
)

KEY = "quant"
#: Nominal arithmetic of a quantize kernel per weight (max, min, scale, round): places it on the
#: roofline, where its intensity (4 FLOPs per 4 B read + < 1 B written) marks it bandwidth-bound.
OPS_PER_WEIGHT = 4
Format = Enum("Format", {name: name for name in FORMATS})
Distribution = Enum("Distribution", {name: name for name in DISTRIBUTIONS})


class Scheme(Enum):
    symmetric = "symmetric"
    affine = "affine"
    seed_minmax = "seed_minmax"  # the classic demo's min/max rule, kept as a baseline


class Granularity(Enum):
    per_tensor = "per_tensor"
    per_channel = "per_channel"
    per_group = "per_group"


class ScaleDType(Enum):
    float16 = "float16"
    float32 = "float32"


@dataclass
class QuantConfig:
    """Knobs of the quantization experiment, under ``quant.*``."""

    rows: int = 512  # output channels of W[out, in]
    cols: int = 512  # input features
    format: Format = Format.uniform  # uniform, a GGUF format (q8_0 ... q6_k) or nf4
    bits: int = 8  # uniform only: 2..8
    scheme: Scheme = Scheme.symmetric  # uniform only
    granularity: Granularity = Granularity.per_channel  # uniform only
    group_size: int = 128  # uniform per_group only
    scale_dtype: ScaleDType = ScaleDType.float16  # uniform and nf4
    distribution: Distribution = Distribution.gaussian
    n_inputs: int = 64  # random inputs x for the cosine of W·x vs Ŵ·x
    sample_pairs: int = 10_000  # (original, dequantized) pairs kept for the report, at most 10,000

    def __post_init__(self) -> None:
        require_positive(KEY, self, "rows", "cols", "n_inputs")
        require_positive(KEY, self, "sample_pairs", minimum=0)
        require(self.sample_pairs <= 10_000, f"{KEY}.sample_pairs={self.sample_pairs} must be <= 10000")
        fmt = self.format.value
        if fmt == "uniform":
            require(2 <= self.bits <= 8, f"{KEY}.bits={self.bits} must be between 2 and 8")
            if self.granularity is Granularity.per_group:
                require(self.group_size >= 1, f"{KEY}.group_size={self.group_size} must be >= 1")
                require(self.cols % self.group_size == 0,
                        f"{KEY}.group_size={self.group_size} must divide {KEY}.cols={self.cols}")
        else:
            block = self.spec.block
            require(self.cols % block == 0,
                    f"{KEY}.cols={self.cols} must be a multiple of {block} for {KEY}.format={fmt}")

    @property
    def spec(self) -> QuantSpec:
        return QuantSpec(self.format.value, self.bits, self.scheme.value, self.granularity.value,
                         self.group_size, self.scale_dtype.value)


COLUMNS = (
    "bits_per_weight",
    "bytes",
    "compression_vs_fp32",
    "time_median_s",
    "time_iqr_s",
    "time_cv",
    "n_samples",
    "inner_loops",
    "unstable",
    "quantize_gb_per_s",
    "flops",
    "gflops",
    "bytes_moved",
    "dequantize_time_median_s",
    "dequantize_time_iqr_s",
    "dequantize_gb_per_s",
    "weight_std",
    "mae",
    "max_abs_err",
    "mse",
    "rel_l2",
    "sqnr_db",
    "cosine",
    "cosine_min",
)


def estimate_bytes(cfg: QuantConfig) -> dict[str, int]:
    n = cfg.rows * cfg.cols
    return {
        "weights and reconstruction (float32, float64)": n * (4 + 4 + 8 + 8),
        "quantizer temporaries": n * 4,
        "layer outputs (float64)": 4 * cfg.rows * cfg.n_inputs * 8,
    }


def run(cfg: QuantConfig, bench: BenchConfig, seed: int) -> list[VariantResult]:
    """Quantize the matrix with the configured method: error metrics, output fidelity, timing."""
    check_fits(KEY, estimate_bytes(cfg), f"lower {KEY}.rows or {KEY}.cols")
    spec = cfg.spec
    rng = np.random.default_rng(seed)
    w = synthetic_weights(cfg.distribution.value, cfg.rows, cfg.cols, rng)
    x = rng.standard_normal((cfg.cols, cfg.n_inputs)).astype(np.float32)
    pick = np.sort(rng.choice(w.size, size=min(cfg.sample_pairs, w.size), replace=False))

    def one() -> VariantResult:
        start = time.perf_counter()
        qt = quantize(w, spec)
        w_hat = qt.dequantize()
        errors = error_metrics(w, w_hat)
        cos = output_cosine(w, w_hat, x)

        t_q = bench.measure(lambda: quantize(w, spec), start)
        t_d = bench.measure(qt.dequantize, start)
        fp32 = w.nbytes
        metrics = {
            "bits_per_weight": qt.bits_per_weight,
            "bytes": qt.nbytes,
            "compression_vs_fp32": fp32 / qt.nbytes,
            **{k: v for k, v in t_q.stats().items() if k in COLUMNS},
            "quantize_gb_per_s": fp32 / t_q.median / 1e9,
            "flops": OPS_PER_WEIGHT * w.size,
            "gflops": OPS_PER_WEIGHT * w.size / t_q.median / 1e9,
            "bytes_moved": fp32 + qt.nbytes,
            "dequantize_time_median_s": t_d.median,
            "dequantize_time_iqr_s": t_d.iqr,
            "dequantize_gb_per_s": fp32 / t_d.median / 1e9,
            "weight_std": float(np.std(w, dtype=np.float64)),
            **errors,
            "cosine": float(cos.mean()),
            "cosine_min": float(cos.min()),
        }
        per_row = channel_errors(w, w_hat)
        rows_i, cols_i = np.divmod(pick, cfg.cols)
        sidecars = {
            "channel_errors": {"channel": np.arange(cfg.rows), **per_row},
            "pairs": {"row": rows_i, "col": cols_i, "original": w.reshape(-1)[pick],
                      "dequantized": w_hat.reshape(-1)[pick]},
        }
        return VariantResult(spec.label, metrics, timings={"quantize": t_q, "dequantize": t_d},
                             sidecars=sidecars)

    return [run_variant(spec.label, one, bench)]


def summary(results: list[VariantResult]) -> str:
    r = results[0]
    if r.status != "ok":
        return f"{r.variant}: {r.status}"
    m = r.metrics
    return (f"{r.variant}: {m['bits_per_weight']:.3g} bits/weight, SQNR {m['sqnr_db']:.1f} dB, "
            f"cosine {m['cosine']:.5f}, quantize {m['quantize_gb_per_s']:.2f} GB/s")


EXPERIMENT = Experiment(
    name="quantization",
    key=KEY,
    schema=QuantConfig,
    columns=COLUMNS,
    run=run,
    report="experiments.quantization_report",
    summary=summary,
)

