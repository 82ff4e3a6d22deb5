"""Run the KV-cache experiment: every strategy checked against one float64 causal pass, its observed
counts against the closed-form formulas, then timed with the harness."""

from __future__ import annotations

import time

import numpy as np

from experiments.framework.bench import TIMING_COLUMNS, BenchConfig, check_fits, one_line, run_variant
from experiments.framework.spec import Column, VariantResult
from experiments.kv_cache.schema import KEY, KVConfig
from infer_core.decoder.decode import (
    GenerationCounts,
    expected_bytes_moved,
    expected_cache_bytes_copied,
    expected_flops,
    expected_kv_projections,
    generate,
    make_cache,
    reference_outputs,
)
from infer_core.decoder.kv_cache import Strategy, kv_cache_bytes
from infer_core.decoder.model import QUERY_CHUNK, init_decoder
from infer_core.measure.memory import peak_rss_bytes, reset_peak_rss
from infer_core.measure.timing import paired_ratios, ratio_stats

COLUMNS = (
    *TIMING_COLUMNS,  # every statistic of a timing
    Column("tokens_per_s", "1/s", "generated tokens (batch × seq_len) per second of median time"),
    Column("time_per_token_s", "s", "median time / seq_len"),
    Column("speedup_vs_recompute", "", "median over interleaved rounds of recompute's time / this strategy's",
           kind="measurement"),
    Column("speedup_q1", "", "first quartile of those per-round ratios", kind="measurement"),
    Column("speedup_q3", "", "third quartile of those per-round ratios", kind="measurement"),
    Column("speedup_unstable", "", "True when the ratios' quartiles lie more than 10% of the median apart",
           kind="measurement"),
    Column("kv_projections", "", "tokens through each layer's K/V projection, observed; equals "
                                 "n·p + n(n+1)/2 without a cache, p + n with one"),
    Column("flops", "FLOP", "useful matrix FLOPs from the closed form (projections + attention over t keys)"),
    Column("gflops", "GFLOP/s", "flops / median time"),
    Column("bytes_moved", "B", "least traffic from the closed form: weights and attended K/V once per "
                               "forward call, plus cache writes"),
    Column("cache_bytes_copied", "B", "bytes the cache wrote, observed; checked against the closed form"),
    Column("kv_cache_bytes", "B", "2 × layers × kv_heads × d_head × tokens × batch × bytes; 0 for recompute"),
    Column("peak_rss_bytes", "B", "peak resident set of the process while the variant ran", kind="measurement"),
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

    def check(strategy: Strategy) -> VariantResult:
        """One generation: outputs against the float64 pass, observed counts against the closed forms."""
        start = time.perf_counter()
        reset_peak_rss()
        counts = GenerationCounts()
        y = generate(model, x, p, strategy, counts=counts, deadline=start + bench.max_seconds)
        observed = {"kv_projections": counts.kv_projections, "cache_bytes_copied": counts.cache_bytes_written}
        expected = {"kv_projections": expected_kv_projections(strategy, p, n),
                    "cache_bytes_copied": expected_cache_bytes_copied(strategy, shape, b, p, n)}
        if observed != expected:
            raise RuntimeError(f"observed {observed} != closed-form {expected}")
        cached = strategy is not Strategy.recompute
        return VariantResult(strategy.value, {
            **observed,
            "flops": expected_flops(strategy, shape, b, p, n),
            "bytes_moved": expected_bytes_moved(strategy, shape, b, p, n),
            "kv_cache_bytes": kv_cache_bytes(shape.n_layers, shape.n_kv_heads, shape.d_head, p + n, b,
                                             shape.itemsize) if cached else 0,
            "peak_rss_bytes": peak_rss_bytes(),
            "max_abs_err_vs_ref": float(np.max(np.abs(y.astype(np.float64) - ref))),
        })

    results = {s.value: run_variant(s.value, lambda s=s: check(s), bench) for s in cfg.strategies}
    caches = {s: make_cache(s, shape, b, p + n) for s in cfg.strategies}  # allocated once, outside the timing
    calls = {s.value: (lambda s=s: generate(model, x, p, s, cache=caches[s]))
             for s in cfg.strategies if results[s.value].status == "ok"}
    try:
        timings, over = bench.measure_rounds(calls)
    except Exception as exc:  # a strategy that passed its check and then raised while timed
        timings, over = {}, {}
        results.update({name: VariantResult(name, status="failed", error=one_line(exc)) for name in calls})
    for name, reason in over.items():
        results[name] = VariantResult(name, status="skipped", error=reason)
    for name, t in timings.items():
        m = results[name].metrics
        m.update(t.stats(), tokens_per_s=b * n / t.median, time_per_token_s=t.median / n,
                 gflops=m["flops"] / t.median / 1e9)
        results[name].timings["generate"] = t
        if "recompute" in timings:  # the speedup of each round, then its median and spread
            med, q1, q3, unstable = ratio_stats(paired_ratios(timings["recompute"], t))
            m.update(speedup_vs_recompute=med, speedup_q1=q1, speedup_q3=q3, speedup_unstable=unstable)
    return list(results.values())


def summary(results: list[VariantResult]) -> str:
    """One line: the fastest strategy and its speedup over recompute."""
    ok = [r for r in results if r.status == "ok"]
    if not ok:
        return "no strategy completed"
    best = min(ok, key=lambda r: r.metrics["time_median_s"])
    m = best.metrics
    vs = ""
    if "speedup_vs_recompute" in m:
        flag = " [unstable ratio: quartiles more than 10% apart]" if m["speedup_unstable"] else ""
        vs = f", {m['speedup_vs_recompute']:.1f}x ({m['speedup_q1']:.1f}-{m['speedup_q3']:.1f}) vs recompute{flag}"
    return f"best {best.variant} {m['time_median_s'] * 1e3:.3g} ms{vs}"
