"""Run the KV-cache experiment: every strategy checked against one float64 causal pass, its observed
counts against the closed-form formulas, then timed with the harness."""

from __future__ import annotations

import time

import numpy as np

from experiments.framework.bench import BenchConfig, check_fits, run_variant, timing_columns
from experiments.framework.spec import Column, VariantResult
from experiments.kv_cache.schema import KEY, KVConfig
from infer_core.attention import QUERY_CHUNK, init_decoder
from infer_core.decode import (
    GenerationCounts,
    expected_bytes_moved,
    expected_cache_bytes_copied,
    expected_flops,
    expected_kv_projections,
    generate,
    make_cache,
    reference_outputs,
)
from infer_core.kv_cache import Strategy, kv_cache_bytes
from infer_core.memory import peak_rss_bytes, reset_peak_rss

COLUMNS = (
    *timing_columns("time_median_s", "time_iqr_s", "time_min_s", "time_q1_s", "time_q3_s", "time_max_s",
                    "time_mean_s", "time_std_s", "time_cv", "cpu_time_median_s", "n_samples", "inner_loops",
                    "warmup", "unstable"),
    Column("tokens_per_s", "1/s", "generated tokens (batch × seq_len) per second of median time"),
    Column("time_per_token_s", "s", "median time / seq_len"),
    Column("speedup_vs_recompute", "", "recompute's median time / this strategy's, same point"),
    Column("kv_projections", "", "tokens through each layer's K/V projection, observed; equals "
                                 "n·p + n(n+1)/2 without a cache, p + n with one"),
    Column("flops", "FLOP", "useful matrix FLOPs from the closed form (projections + attention over t keys)"),
    Column("gflops", "GFLOP/s", "flops / median time"),
    Column("bytes_moved", "B", "least traffic from the closed form: weights and attended K/V once per "
                               "forward call, plus cache writes"),
    Column("cache_bytes_copied", "B", "bytes the cache wrote, observed; checked against the closed form"),
    Column("kv_cache_bytes", "B", "2 × layers × kv_heads × d_head × tokens × batch × bytes; 0 for recompute"),
    Column("peak_rss_bytes", "B", "peak resident set of the process while the variant ran"),
    Column("max_abs_err_vs_ref", "", "max |output − float64 causal pass|"),
)


def estimate_bytes(cfg: KVConfig) -> dict[str, int]:
    """Largest arrays a point allocates, by part (the float64 reference included)."""
    s, total, b = cfg.shape, cfg.prompt_len + cfg.seq_len, cfg.batch
    width = s.d_model + 2 * s.d_kv
    weights = s.n_layers * s.d_model * (width + s.d_model)
    scores = b * s.n_heads * min(total, QUERY_CHUNK) * total  # one query chunk of one layer
    activations = b * total * (2 * s.d_model + width)  # x, qkv and the attention output
    return {
        "weights": weights * (s.itemsize + 8),
        "inputs and activations": activations * (s.itemsize + 8),
        "attention scores": scores * 8,
        # the timed cache, plus concat's old and new copy during an append
        "KV cache": 3 * kv_cache_bytes(s.n_layers, s.n_kv_heads, s.d_head, total, b, s.itemsize),
    }


def check_memory(cfg: KVConfig) -> None:
    """Fail before allocating when a point would not fit in the memory available."""
    check_fits(KEY, estimate_bytes(cfg), f"lower {KEY}.seq_len, {KEY}.batch or {KEY}.d_model")


def run(cfg: KVConfig, bench: BenchConfig, seed: int) -> list[VariantResult]:
    """Generate, check and time every strategy of ``cfg.strategies`` on the same weights and inputs."""
    check_memory(cfg)
    shape, p, n, b = cfg.shape, cfg.prompt_len, cfg.seq_len, cfg.batch
    rng = np.random.default_rng(seed)
    model = init_decoder(shape, rng)
    x = rng.standard_normal((b, p + n, shape.d_model), dtype=np.dtype(shape.dtype))
    ref = reference_outputs(model, x, p)

    def one(strategy: Strategy) -> VariantResult:
        start = time.perf_counter()
        reset_peak_rss()
        counts = GenerationCounts()
        y = generate(model, x, p, strategy, counts=counts, deadline=start + bench.max_seconds)
        observed = {"kv_projections": counts.kv_projections, "cache_bytes_copied": counts.cache_bytes_written}
        expected = {"kv_projections": expected_kv_projections(strategy, p, n),
                    "cache_bytes_copied": expected_cache_bytes_copied(strategy, shape, b, p, n)}
        if observed != expected:
            raise RuntimeError(f"observed {observed} != closed-form {expected}")
        err = float(np.max(np.abs(y.astype(np.float64) - ref)))
        cache = make_cache(strategy, shape, b, p + n)  # allocated once, outside the timed region
        timing = bench.measure(lambda: generate(model, x, p, strategy, cache=cache), start)
        median, flops = timing.median, expected_flops(strategy, shape, b, p, n)
        cached = strategy is not Strategy.recompute
        metrics = {
            **timing.stats(),
            "tokens_per_s": b * n / median,
            "time_per_token_s": median / n,
            **observed,
            "flops": flops,
            "gflops": flops / median / 1e9,
            "bytes_moved": expected_bytes_moved(strategy, shape, b, p, n),
            "kv_cache_bytes": kv_cache_bytes(shape.n_layers, shape.n_kv_heads, shape.d_head, p + n, b,
                                             shape.itemsize) if cached else 0,
            "peak_rss_bytes": peak_rss_bytes(),
            "max_abs_err_vs_ref": err,
        }
        return VariantResult(strategy.value, metrics, timings={"generate": timing})

    results = [run_variant(s.value, lambda s=s: one(s), bench) for s in cfg.strategies]
    base = next((r for r in results if r.variant == "recompute" and r.status == "ok"), None)
    for r in results:
        if r.status == "ok" and base is not None:
            r.metrics["speedup_vs_recompute"] = base.metrics["time_median_s"] / r.metrics["time_median_s"]
    return results


def summary(results: list[VariantResult]) -> str:
    """One line: the fastest strategy and its speedup over recompute."""
    ok = [r for r in results if r.status == "ok"]
    if not ok:
        return "no strategy completed"
    best = min(ok, key=lambda r: r.metrics["time_median_s"])
    speedup = best.metrics.get("speedup_vs_recompute")
    vs = f", {speedup:.1f}x vs recompute" if speedup is not None else ""
    return f"best {best.variant} {best.metrics['time_median_s'] * 1e3:.3g} ms{vs}"
