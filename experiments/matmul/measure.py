"""Run the matmul experiment: one matrix product, timed and placed on this machine's roofline.

Each weight variant (``fp32``; ``int8_dequant``: int8 weights dequantized before a float GEMM) is
one row, with its analytic FLOPs and bytes, the measured GFLOP/s and GB/s, and both as shares of
the machine's peak and of the roofline (from the cached machine reference, measured on first use).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from experiments.framework.bench import BenchConfig, check_fits, run_variant, timing_columns
from experiments.framework.progress import machine_reference
from experiments.framework.spec import Column, VariantResult
from experiments.matmul.schema import KEY, MatmulConfig
from infer_core.matmul import bytes_moved, dequant_matmul, quantize_weights, weight_bytes
from infer_core.measure.machine import roofline

log = logging.getLogger(__name__)
#: Above this share of its roofline a figure is impossible: the roof (the cached reference) is wrong.
ROOF_TOLERANCE = 1.10

COLUMNS = (
    Column("m", "", "rows of X and Y"),
    Column("k", "", "columns of X, rows of W"),
    Column("n", "", "columns of W and Y"),
    *timing_columns("time_median_s", "time_iqr_s", "time_min_s", "time_q1_s", "time_q3_s", "time_max_s", "time_cv",
                    "n_samples", "inner_loops", "unstable"),
    Column("flops", "FLOP", "2·m·n·k"),
    Column("gflops", "GFLOP/s", "flops / median time"),
    Column("bytes_moved", "B", "operands read and the result written once (int8: also the dequantized W "
                               "written and read back)"),
    Column("weight_bytes", "B", "storage of W (int8: codes + fp16 scales)"),
    Column("intensity_flop_per_byte", "FLOP/B", "flops / bytes_moved"),
    Column("gb_per_s", "GB/s", "bytes_moved / median time"),
    Column("peak_gflops", "GFLOP/s", "the machine's measured GEMM peak for this dtype and thread count"),
    Column("pct_of_peak", "%", "gflops / peak_gflops", kind="measurement"),
    Column("bandwidth_gbps", "GB/s", "the machine's memory roof: best of copy and read-only bandwidth"),
    Column("roofline_gflops", "GFLOP/s", "min(peak, intensity × bandwidth)"),
    Column("pct_of_roofline", "%", "gflops / roofline_gflops", kind="measurement"),
    Column("ridge_point", "FLOP/B", "peak / bandwidth: the intensity where the two roofs meet (of the measured "
                                    "machine)", kind="measurement"),
    Column("bound", "", "`compute` or `bandwidth`: which roof limits this product", kind="measurement"),
    Column("above_roofline", "", "True above 110% of the roofline: the machine reference is stale or foreign",
           kind="measurement"),
    Column("max_rel_err_vs_ref", "", "max |Y − Y₆₄| / max |Y₆₄| against a float64 product"),
)
NAMES = {c.name for c in COLUMNS}


def estimate_bytes(cfg: MatmulConfig) -> dict[str, int]:
    g, item = cfg.gemm, np.dtype(cfg.dtype.value).itemsize
    operands = g.m * g.k + g.k * g.n + g.m * g.n
    return {"operands": operands * item, "float64 reference": operands * 8,
            "dequantized weights": 2 * g.k * g.n * item}


def run(cfg: MatmulConfig, bench: BenchConfig, seed: int) -> list[VariantResult]:
    """Time every weight variant of the product; check it against a float64 product."""
    check_fits(KEY, estimate_bytes(cfg), f"lower {KEY}.size, {KEY}.d_model or {KEY}.tokens")
    ref, measured = machine_reference(bench.machine_file)
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
            **{k: v for k, v in stats.items() if k in NAMES},
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
            "above_roofline": gflops > ROOF_TOLERANCE * roof.attainable_gflops,
            "max_rel_err_vs_ref": err,
        }
        return VariantResult(weights, metrics, timings={"matmul": timing})

    return [run_variant(wt.value, lambda wt=wt: one(wt.value), bench) for wt in cfg.weights]


def summary(results: list[VariantResult]) -> str:
    parts = [f"{r.variant} {r.metrics['gflops']:.1f} GFLOP/s ({r.metrics['pct_of_roofline']:.0f}% of roofline)"
             for r in results if r.status == "ok"]
    if any(r.metrics.get("above_roofline") for r in results if r.status == "ok"):
        parts.append("ABOVE the roofline: the machine reference is stale, re-measure it with experiment=machine")
    return "; ".join(parts) or "no variant completed"
