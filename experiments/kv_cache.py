"""The KV-cache experiment: generate ``kv.seq_len`` tokens under each cache strategy.

Every strategy's outputs are checked against one float64 causal pass, its counted
K/V projections, FLOPs and cache copies against the formulas of GUIDE §6, and then
it is timed with the harness.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

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
from infer_core.attention import QUERY_CHUNK, Counts, DecoderShape, init_decoder
from infer_core.decode import (
    expected_bytes_read,
    expected_cache_bytes_copied,
    expected_flops,
    expected_kv_projections,
    generate,
    make_cache,
    reference_outputs,
)
from infer_core.kv_cache import Strategy, kv_cache_bytes
from infer_core.memory import peak_rss_bytes, reset_peak_rss

KEY = "kv"


@dataclass
class KVConfig:
    """Knobs of the KV-cache experiment, under ``kv.*``."""

    d_model: int = 64
    n_heads: int = 4
    n_kv_heads: int | None = None  # GQA; null means n_heads (plain multi-head attention)
    n_layers: int = 1
    batch: int = 1
    prompt_len: int = 0  # prefilled in one pass before generation
    seq_len: int = 100  # tokens generated one at a time
    dtype: DType = DType.float32
    strategies: list[Strategy] = field(default_factory=lambda: list(Strategy))

    def __post_init__(self) -> None:
        require_positive(KEY, self, "d_model", "n_heads", "n_layers", "batch", "seq_len")
        require_positive(KEY, self, "prompt_len", minimum=0)
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        require_positive(KEY, self, "n_kv_heads")
        require(
            self.d_model % self.n_heads == 0,
            f"{KEY}.d_model={self.d_model} must be divisible by {KEY}.n_heads={self.n_heads}",
        )
        require(
            self.n_heads % self.n_kv_heads == 0,
            f"{KEY}.n_heads={self.n_heads} must be divisible by {KEY}.n_kv_heads={self.n_kv_heads}",
        )
        names = [s.value for s in self.strategies]
        require(len(names) > 0, f"{KEY}.strategies is empty: name at least one of {_choices()}")
        require(len(set(names)) == len(names), f"{KEY}.strategies={names} repeats a strategy")

    @property
    def shape(self) -> DecoderShape:
        return DecoderShape(self.d_model, self.n_heads, self.n_kv_heads, self.n_layers, self.dtype.value)


def _choices() -> str:
    return ", ".join(s.value for s in Strategy)


COLUMNS = (
    "time_median_s",
    "time_iqr_s",
    "time_min_s",
    "time_q1_s",
    "time_q3_s",
    "time_max_s",
    "time_mean_s",
    "time_std_s",
    "time_cv",
    "cpu_time_median_s",
    "n_samples",
    "inner_loops",
    "warmup",
    "unstable",
    "tokens_per_s",
    "time_per_token_s",
    "speedup_vs_recompute",
    "kv_projections",
    "flops",
    "gflops",
    "bytes_moved",
    "cache_bytes_copied",
    "kv_cache_bytes",
    "peak_rss_bytes",
    "max_abs_err_vs_ref",
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
        counts = Counts.for_layers(shape.n_layers)
        y = generate(model, x, p, strategy, counts=counts, deadline=start + bench.max_seconds)
        expected = {
            "kv_projections": expected_kv_projections(strategy, p, n),
            "flops": expected_flops(strategy, shape, b, p, n),
            "cache_bytes_copied": expected_cache_bytes_copied(strategy, shape, b, p, n),
            "bytes_read": expected_bytes_read(strategy, shape, b, p, n),
        }
        counted = {
            "kv_projections": counts.kv_projections[0],
            "flops": counts.flops,
            "cache_bytes_copied": counts.cache_bytes_copied,
            "bytes_read": counts.bytes_read,
        }
        layers_agree = len(set(counts.kv_projections)) == 1
        if counted != expected or not layers_agree:
            raise RuntimeError(f"counted {counted} (per layer {counts.kv_projections}) != formulas {expected}")
        err = float(np.max(np.abs(y.astype(np.float64) - ref)))
        cache = make_cache(strategy, shape, b, p + n)  # allocated once, outside the timed region
        timing = bench.measure(lambda: generate(model, x, p, strategy, cache=cache), start)
        median = timing.median
        cached = strategy is not Strategy.recompute
        metrics = {
            **timing.stats(),
            "tokens_per_s": b * n / median,
            "time_per_token_s": median / n,
            **{k: v for k, v in counted.items() if k != "bytes_read"},
            "bytes_moved": counts.bytes_read + counts.cache_bytes_copied,
            "gflops": counts.flops / median / 1e9,
            "kv_cache_bytes": kv_cache_bytes(
                shape.n_layers, shape.n_kv_heads, shape.d_head, p + n, b, shape.itemsize
            ) if cached else 0,
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


EXPERIMENT = Experiment(
    name="kv_cache",
    key=KEY,
    schema=KVConfig,
    columns=COLUMNS,
    run=run,
    report="experiments.kv_cache_report",
    summary=summary,
)
