"""Run the quantization experiment: quantize one weight matrix with one method, measure what it costs.

Rows report storage (true bytes, bits per weight), reconstruction error in float64, the fidelity
of layer outputs W·x, and quantize/dequantize speed. Sidecars hold the per-channel errors and a
bounded sample of (original, dequantized) pairs for the report.
"""

from __future__ import annotations

import time

import numpy as np

from experiments.framework.bench import BenchConfig, check_fits, run_variant, timing_columns
from experiments.framework.spec import Column, VariantResult
from experiments.quantization.schema import KEY, QuantConfig
from infer_core.quant import channel_errors, error_metrics, output_cosine, quantize, synthetic_weights

#: Nominal arithmetic of a quantize kernel per weight (max, min, scale, round): places it on the
#: roofline, where its intensity (4 FLOPs per 4 B read + < 1 B written) marks it bandwidth-bound.
OPS_PER_WEIGHT = 4

COLUMNS = (
    Column("bits_per_weight", "bit", "true storage per weight: codes, scales and zero points"),
    Column("bytes", "B", "bytes of the quantized matrix"),
    Column("compression_vs_fp32", "", "float32 bytes / quantized bytes"),
    *timing_columns("time_median_s", "time_iqr_s", "time_cv", "n_samples", "inner_loops", "unstable"),
    Column("quantize_gb_per_s", "GB/s", "float32 bytes / median quantize time"),
    Column("flops", "FLOP", f"nominal quantize arithmetic: {OPS_PER_WEIGHT} per weight (for the roofline)"),
    Column("gflops", "GFLOP/s", "flops / median quantize time"),
    Column("bytes_moved", "B", "float32 bytes read + quantized bytes written"),
    Column("dequantize_time_median_s", "s", "median dequantize time"),
    Column("dequantize_time_iqr_s", "s", "interquartile range of the dequantize time"),
    Column("dequantize_gb_per_s", "GB/s", "float32 bytes / median dequantize time"),
    Column("weight_std", "", "standard deviation of the weights"),
    Column("mae", "", "mean |w − ŵ| (float64)"),
    Column("max_abs_err", "", "max |w − ŵ|"),
    Column("mse", "", "mean (w − ŵ)²"),
    Column("rel_l2", "", "‖w − ŵ‖₂ / ‖w‖₂"),
    Column("sqnr_db", "dB", "10·log10(Σw² / Σ(w − ŵ)²)"),
    Column("cosine", "", "mean over inputs x of the cosine of W·x and Ŵ·x"),
    Column("cosine_min", "", "lowest such cosine"),
)

NAMES = {c.name for c in COLUMNS}


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
            **{k: v for k, v in t_q.stats().items() if k in NAMES},
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
