"""Run the batching experiment: a seeded trace served by the engine loop (``infer_core.serving.scheduler``) over a paged
KV cache, every iteration a real batched NumPy decode step (``cost=measured``), or the same schedule replayed on
a cost fitted from the measured iterations of a calibration trace (``cost=model``).

Measured runs check every output of the first ``check_requests`` requests against one full causal pass over
their tokens, whatever batching, preemption or swapping happened. Per-request times go to ``requests.csv``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from experiments.batching.schema import BatchConfig, Cost
from experiments.framework.bench import BenchConfig, point_threads, run_variant
from experiments.framework.spec import Column, VariantResult
from experiments.shared.requests import RequestRecord, request_table
from infer_core.decoder.model import Decoder, init_decoder
from infer_core.serving.executors import CostModel, NumpyExecutor
from infer_core.serving.paged import BlockTables, PagedKVCache
from infer_core.serving.scheduler import FEATURES, Outcome, Policy, run_trace
from infer_core.serving.traces import Trace, make_trace

LATENCIES = (("ttft", "time to first token: arrival to the end of the iteration that produced it"),
             ("tpot", "time per output token after the first: (E2E − TTFT) / (output − 1)"),
             ("e2e", "end-to-end latency: arrival to the last token"))
COLUMNS = (
    Column("n_threads", "", "BLAS threads of the decode steps (the point's bench.threads)"),
    Column("output_throughput", "tok/s", "output tokens / (last finish − first arrival)"),
    Column("request_throughput", "req/s", "requests / (last finish − first arrival)"),
    Column("makespan_s", "s", "first arrival to last finish (measured: wall clock; model: predicted)"),
    *(Column(f"{stat}_{name}_ms", "ms", f"{stat} over the requests of the {meaning}")
      for name, meaning in LATENCIES for stat in ("median", "p99")),
    Column("mean_batch", "", "requests decoded per iteration, averaged over the iterations (padding rows count)",
           kind="measurement"),
    Column("iterations", "", "engine iterations (prefill pieces + one batched decode step each)", kind="measurement"),
    Column("preemptions", "", "requests taken out of the pool to make room (none is lost: each finishes once)"),
    Column("swaps", "", "of them, swapped to the host pool rather than recomputed"),
    Column("peak_blocks", "", "KV blocks in use at most"),
    Column("pool_blocks", "", "KV blocks in the pool (`batch.num_blocks`, or room for max_batch × max_len)"),
    Column("max_rel_err", "", "measured: max |output − full causal pass| / max |pass| over the checked requests"),
    Column("calibration_iterations", "", "cost=model: measured iterations the cost was fitted on", kind="measurement"),
    Column("fit_rel_err_pct", "%", "cost=model: median |predicted − measured| / measured over those iterations",
           kind="measurement"),
    *(Column(f"cost_{f}_us", "µs", f"cost=model: fitted time per unit of `{f}` (Iteration.features)")
      for f in FEATURES),
)


@dataclass
class Served:
    """A run of the loop, and what the cost model needs of it."""

    outcome: Outcome
    max_rel_err: float | None = None


def _trace(cfg: BatchConfig, seed: int, n: int, rate: float | None) -> Trace:
    return make_trace(seed, n, cfg.prompt_len, cfg.output_len, cfg.lengths, cfg.spread, cfg.max_len, rate,
                      cfg.burstiness)


def _measured(cfg: BatchConfig, model: Decoder, trace: Trace, policy: Policy, seed: int, check: int,
              deadline: float) -> Served:
    s = model.shape
    cache = PagedKVCache(cfg.pool_blocks, cfg.block_size, s.n_kv_heads, s.d_head, n_layers=s.n_layers)
    ex = NumpyExecutor(model, cache, seed, frozenset(range(min(check, len(trace)))), deadline)
    out = run_trace(trace.arrival, trace.prompt, trace.output, cache, ex, policy, cfg.max_batch, cfg.preempt, cfg.chunk,
                cfg.swap_blocks)
    return Served(out, ex.check(out.requests))


def _modeled(cfg: BatchConfig, model: Decoder, trace: Trace, seed: int, deadline: float) -> tuple[Served, dict]:
    calibration = _trace(cfg, seed + 1, cfg.calibration_requests, None)
    steps = [step for policy in Policy
             for step in _measured(cfg, model, calibration, policy, seed + 1, 0, deadline).outcome.steps]
    cost = CostModel.fit(steps)
    predicted = np.array([cost.predict(f) for f, _ in steps])
    measured = np.array([t for _, t in steps])
    out = run_trace(trace.arrival, trace.prompt, trace.output, BlockTables(cfg.pool_blocks, cfg.block_size), cost,
                cfg.policy, cfg.max_batch, cfg.preempt, cfg.chunk, cfg.swap_blocks)
    fit = {"calibration_iterations": len(steps),
           "fit_rel_err_pct": 100 * float(np.median(np.abs(predicted - measured) / measured)),
           **{f"cost_{f}_us": 1e6 * c for f, c in zip(FEATURES, cost.coef, strict=True)}}
    return Served(out), fit


def _latencies(out: Outcome) -> dict[str, float]:
    reqs = out.requests
    ms = {"ttft": [r.first_token - r.arrival for r in reqs], "e2e": [r.finish - r.arrival for r in reqs],
          "tpot": [(r.finish - r.first_token) / (r.output - 1) for r in reqs if r.output > 1]}
    row = {}
    for name, values in ms.items():
        v = 1e3 * np.array(values or [np.nan])
        row[f"median_{name}_ms"], row[f"p99_{name}_ms"] = float(np.median(v)), float(np.percentile(v, 99))
    return row


def _check_served(out: Outcome) -> None:
    """Every request finished once, with all its tokens, after it arrived: none lost, none duplicated."""
    bad = [r.id for r in out.requests if r.finish is None or r.generated != r.output or r.first_token < r.arrival]
    if bad:
        raise RuntimeError(f"{len(bad)} request(s) not served in full: {bad[:5]}")


def run(cfg: BatchConfig, bench: BenchConfig, seed: int) -> list[VariantResult]:
    """Serve the trace under ``cfg.policy``, for real or on the fitted cost."""
    trace = _trace(cfg, seed, cfg.n_requests, cfg.rate)
    model = init_decoder(cfg.shape, np.random.default_rng(seed))
    deadline = time.perf_counter() + bench.max_seconds

    def serve_trace() -> VariantResult:
        with threadpool_limits(point_threads(), user_api="blas"):  # the point's own limit, stated
            if cfg.cost is Cost.measured:
                served, fit = _measured(cfg, model, trace, cfg.policy, seed, cfg.check_requests, deadline), {}
            else:
                served, fit = _modeled(cfg, model, trace, seed, deadline)
        out = served.outcome
        _check_served(out)
        span = max(r.finish for r in out.requests) - float(trace.arrival.min())
        row = {"n_threads": point_threads(), "output_throughput": int(trace.output.sum()) / span,
               "request_throughput": len(trace) / span,
               "makespan_s": span, **_latencies(out), "mean_batch": float(np.mean(out.batch_sizes)),
               "iterations": out.iterations, "preemptions": out.preemptions, "swaps": out.swaps,
               "peak_blocks": out.peak_blocks, "pool_blocks": cfg.pool_blocks, "max_rel_err": served.max_rel_err,
               **fit}
        requests = request_table(  # the engine loop receives each request at its arrival: sent at 0
            RequestRecord(r.id, r.arrival, 0.0, [t - r.arrival for t in r.token_times], r.prompt, r.generated,
                          extra={"preemptions": r.preemptions}) for r in out.requests)
        return VariantResult(f"{cfg.policy.value}, {cfg.cost.value}", row, sidecars={"requests": requests})

    return [run_variant(f"{cfg.policy.value}, {cfg.cost.value}", serve_trace, bench)]


def summary(results: list[VariantResult]) -> str:
    r = results[0]
    if r.status != "ok":
        return r.error
    m = r.metrics
    err = "" if m["max_rel_err"] is None else f", rel err {m['max_rel_err']:.1e}"
    return (f"{r.variant}: {m['output_throughput']:.0f} tok/s, p99 TTFT {m['p99_ttft_ms']:.0f} ms, mean batch "
            f"{m['mean_batch']:.1f}, {m['preemptions']} preemptions{err}")
