"""The matmul experiment: one matrix product, timed and placed on this machine's roofline.

``matmul.shape=square`` with ``matmul.size``, or a transformer op (``qkv``, ``attn_out``,
``ffn_up``, ``ffn_down``) for ``matmul.d_model`` and ``matmul.tokens``. Each weight variant
(``fp32``; ``int8_dequant``: int8 weights dequantized before a float GEMM) is one row, with its
analytic FLOPs and bytes, the measured GFLOP/s and GB/s, and both as shares of the machine's
peak and of the roofline (from the cached machine reference, measured on first use).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from experiments.base import (
    BenchConfig,
    DType,
    Experiment,
    VariantResult,
    check_fits,
    require,
    require_positive,
    run_variant,
)
from infer_core.machine import reference, roofline
from infer_core.matmul import OPS, WEIGHTS, bytes_moved, dequant_matmul, op_shape, quantize_weights, weight_bytes

KEY = "matmul"
Shape = Enum("Shape", {name: name for name in OPS})
Weights = Enum("Weights", {name: name for name in WEIGHTS})
log = logging.getLogger(__name__)


@dataclass
class MatmulConfig:
    """Knobs of the matmul experiment, under ``matmul.*``."""

    shape: Shape = Shape.square
    size: int = 1024  # square: n of an n×n×n product
    d_model: int = 4096  # transformer ops
    tokens: int = 1  # transformer ops: 1 = decode GEMV, > 1 = prefill GEMM
    ffn_mult: int = 4  # FFN width = ffn_mult · d_model
    dtype: DType = DType.float32
    weights: list[Weights] = field(default_factory=lambda: list(Weights))

    def __post_init__(self) -> None:
        require_positive(KEY, self, "size", "d_model", "tokens", "ffn_mult")
        names = [w.value for w in self.weights]
        require(len(names) > 0, f"{KEY}.weights is empty: name at least one of {', '.join(WEIGHTS)}")
        require(len(set(names)) == len(names), f"{KEY}.weights={names} repeats a variant")

    @property
    def gemm(self):
        return op_shape(self.shape.value, self.size, self.d_model, self.tokens, self.ffn_mult)


COLUMNS = (
    "m",
    "k",
    "n",
    "time_median_s",
    "time_iqr_s",
    "time_min_s",
    "time_q1_s",
    "time_q3_s",
    "time_max_s",
    "time_cv",
    "n_samples",
    "inner_loops",
    "unstable",
    "flops",
    "gflops",
    "bytes_moved",
    "weight_bytes",
    "intensity_flop_per_byte",
    "gb_per_s",
    "peak_gflops",
    "pct_of_peak",
    "bandwidth_gbps",
    "roofline_gflops",
    "pct_of_roofline",
    "ridge_point",
    "bound",
    "max_rel_err_vs_ref",
)


def estimate_bytes(cfg: MatmulConfig) -> dict[str, int]:
    g, item = cfg.gemm, np.dtype(cfg.dtype.value).itemsize
    operands = g.m * g.k + g.k * g.n + g.m * g.n
    return {"operands": operands * item, "float64 reference": operands * 8,
            "dequantized weights": 2 * g.k * g.n * item}


def run(cfg: MatmulConfig, bench: BenchConfig, seed: int) -> list[VariantResult]:
    """Time every weight variant of the product; check it against a float64 product."""
    check_fits(KEY, estimate_bytes(cfg), f"lower {KEY}.size, {KEY}.d_model or {KEY}.tokens")
    ref, measured = reference(bench.machine_file)
    if measured:
        log.info("measured the machine reference (cached in %s)", bench.machine_file)
    g, dtype = cfg.gemm, cfg.dtype.value
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((g.m, g.k)).astype(dtype)
    w = (rng.standard_normal((g.k, g.n)) / np.sqrt(g.k)).astype(dtype)
    y_ref = x.astype(np.float64) @ w.astype(np.float64)
    scale = float(np.max(np.abs(y_ref))) or 1.0
    out = np.empty((g.m, g.n), dtype=dtype)
    peak = ref.peak_gflops(dtype)

    def one(weights: str) -> VariantResult:
        start = time.perf_counter()
        if weights == "fp32":
            fn = lambda: np.matmul(x, w, out=out)  # noqa: E731 - the timed call
        else:
            wq = quantize_weights(w)
            fn = lambda: dequant_matmul(x, wq)  # noqa: E731
        err = float(np.max(np.abs(fn().astype(np.float64) - y_ref))) / scale
        timing = bench.measure(fn, start)
        moved = sum(bytes_moved(g, x.itemsize, weights).values())
        gflops = g.flops / timing.median / 1e9
        roof = roofline(g.flops, moved, peak, ref.bandwidth_gbps)
        stats = timing.stats()
        metrics = {
            "m": g.m, "k": g.k, "n": g.n,
            **{k: v for k, v in stats.items() if k in COLUMNS},
            "flops": g.flops,
            "gflops": gflops,
            "bytes_moved": moved,
            "weight_bytes": weight_bytes(g, x.itemsize, weights),
            "intensity_flop_per_byte": roof.intensity,
            "gb_per_s": moved / timing.median / 1e9,
            "peak_gflops": peak,
            "pct_of_peak": 100 * gflops / peak,
            "bandwidth_gbps": ref.bandwidth_gbps,
            "roofline_gflops": roof.attainable_gflops,
            "pct_of_roofline": 100 * gflops / roof.attainable_gflops,
            "ridge_point": roof.ridge_point,
            "bound": roof.bound,
            "max_rel_err_vs_ref": err,
        }
        return VariantResult(weights, metrics, timings={"matmul": timing})

    return [run_variant(wt.value, lambda wt=wt: one(wt.value), bench) for wt in cfg.weights]


def summary(results: list[VariantResult]) -> str:
    parts = [f"{r.variant} {r.metrics['gflops']:.1f} GFLOP/s ({r.metrics['pct_of_roofline']:.0f}% of roofline)"
             for r in results if r.status == "ok"]
    return "; ".join(parts) or "no variant completed"


EXPERIMENT = Experiment(
    name="matmul",
    key=KEY,
    schema=MatmulConfig,
    columns=COLUMNS,
    run=run,
    report="experiments.matmul_report",
    summary=summary,
)
