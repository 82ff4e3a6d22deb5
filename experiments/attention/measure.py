"""Run the attention experiment: one call of the dense or the tiled form, checked against a float64 dense
pass, timed with the harness, its peak memory measured and its slow-memory traffic counted.

Peak memory is tracemalloc's high-water mark over one untimed call: NumPy reports its array buffers to
tracemalloc, so it is every array the call allocated (the inputs, made before, are not counted).
"""

from __future__ import annotations

import math
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from experiments.attention.schema import KEY, AttnConfig, Impl, Phase
from experiments.framework.bench import TIMING_COLUMNS, BenchConfig, check_fits, run_variant
from experiments.framework.progress import machine_reference
from experiments.framework.spec import Column, ConfigError, VariantResult
from infer_core.decoder.attention import (
    Traffic,
    decode_traffic,
    fast_memory,
    flash_attention,
    flash_decode,
    flash_formula,
    flash_traffic,
    naive_attention,
    naive_traffic,
)

COLUMNS = (
    *TIMING_COLUMNS,
    Column("n_threads", "", "threads the call ran on: flash prefill's workers over query blocks, else BLAS's "
                            "(the point's bench.threads)"),
    Column("blas_threads_per_worker", "", "flash prefill: BLAS threads inside each worker (1)"),
    Column("useful_flops", "FLOP", "4 × d_head × (query, key) pairs attended, per head: QKᵀ and PV over the pairs "
                                   "a query sees (causal: the lower triangle, 2·N²·d)"),
    Column("gflops", "GFLOP/s", "useful_flops / median time"),
    Column("peak_gflops", "GFLOP/s", "the machine's measured float32 GEMM peak at this thread count"),
    Column("pct_of_peak", "%", "gflops / peak_gflops", kind="measurement"),
    Column("peak_bytes", "B", "tracemalloc's high-water mark over one call: every array it allocated"),
    Column("largest_intermediate_bytes", "B", "the largest array the call made (naive: the scores)"),
    Column("estimate_bytes", "B", "what the call was expected to allocate, checked against `attn.max_gib` first"),
    Column("traffic_reads", "", "elements read from slow memory (Q, K, V, O, naive's scores), counted as it ran"),
    Column("traffic_writes", "", "elements written to slow memory, counted as it ran"),
    Column("traffic_elements", "", "reads + writes; equal to the closed form (checked)"),
    Column("formula_elements", "", "naive: heads·(N·d + N²), standard attention's Θ; flash: heads·N²·d²/M "
                                   "(FlashAttention's Θ, constant 1); decode: the closed form"),
    Column("fast_memory_elements", "", "flash prefill: M = 2·block_q·d + 2·block_k·d + block_q·block_k per head"),
    Column("max_abs_err", "", "max |output − float64 dense pass| over the checked rows"),
    Column("rel_err", "", "max_abs_err / max |float64 output|"),
)


def estimate_bytes(cfg: AttnConfig) -> int:
    """What one call allocates: naive's scores and mask, or flash's blocks per thread, and the output."""
    n, d, item = cfg.seq_len, cfg.d_head, np.dtype(cfg.dtype.value).itemsize
    rows = 1 if cfg.phase is Phase.decode else n
    out = cfg.n_heads * rows * d * item
    if cfg.impl is Impl.naive:
        return out + cfg.n_heads * rows * n * item + (rows * n if cfg.causal else 0)  # scores, bool mask
    if cfg.phase is Phase.decode:
        return out + cfg.n_heads * (n + cfg.n_splits * (d + 2)) * item
    bq, bk = min(cfg.block_q, n), min(cfg.block_k, n)
    return out + cfg.n_threads * cfg.n_heads * (3 * bq * d + 2 * bq * bk) * item


def refuse_over_budget(cfg: AttnConfig) -> int:
    need = estimate_bytes(cfg)
    if need > cfg.max_gib * 2**30:
        raise ConfigError(f"{KEY}.impl={cfg.impl.value} at {KEY}.seq_len={cfg.seq_len} needs about "
                          f"{need / 2**30:.2f} GiB (its {'N×N scores' if cfg.impl is Impl.naive else 'blocks'}), "
                          f"over {KEY}.max_gib={cfg.max_gib:g}: refused before allocating")
    check_fits(KEY, {"one call": need}, f"lower {KEY}.seq_len or {KEY}.max_gib")
    return need


def _inputs(cfg: AttnConfig, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    dt, n, d = np.dtype(cfg.dtype.value), cfg.seq_len, cfg.d_head
    q = rng.standard_normal((cfg.n_heads, 1 if cfg.phase is Phase.decode else n, d), dtype=np.float64).astype(dt)
    return q, *(rng.standard_normal((cfg.n_kv_heads, n, d), dtype=np.float64).astype(dt) for _ in range(2))


def _call(cfg: AttnConfig, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> Callable[[], tuple[np.ndarray, Traffic]]:
    if cfg.phase is Phase.decode:
        if cfg.impl is Impl.naive:
            return lambda: naive_attention(q, k, v, True, cfg.seq_len - 1)
        return lambda: flash_decode(q[:, 0], k, v, cfg.n_splits)
    if cfg.impl is Impl.naive:
        return lambda: naive_attention(q, k, v, cfg.causal)
    return lambda: flash_attention(q, k, v, cfg.causal, cfg.block_q, cfg.block_k, threads=cfg.n_threads)


def _closed_form(cfg: AttnConfig) -> tuple[int, int]:
    n, d, h = cfg.seq_len, cfg.d_head, cfg.n_heads
    if cfg.impl is Impl.naive:
        return naive_traffic(h, 1 if cfg.phase is Phase.decode else n, n, d)
    if cfg.phase is Phase.decode:
        return decode_traffic(h, n, d, cfg.n_splits)
    return flash_traffic(h, n, n, d, cfg.block_q, cfg.causal)


def check_rows(cfg: AttnConfig, q: np.ndarray, k: np.ndarray, v: np.ndarray, out: np.ndarray,
               rng: np.random.Generator) -> tuple[float, float]:
    """Max |out − float64 dense pass| and its ratio to max |reference| over ``check_rows`` query rows."""
    n_q = q.shape[1]
    rows = np.sort(rng.choice(n_q, min(n_q, cfg.check_rows), replace=False))
    pos = rows + (cfg.seq_len - n_q)  # a decode query sits at the end of the cache
    g = cfg.n_heads // cfg.n_kv_heads
    k64, v64 = np.repeat(k, g, axis=0).astype(np.float64), np.repeat(v, g, axis=0).astype(np.float64)
    s = q[:, rows].astype(np.float64) @ k64.swapaxes(-1, -2) / math.sqrt(cfg.d_head)
    if cfg.causal or cfg.phase is Phase.decode:
        s[:, np.arange(cfg.seq_len) > pos[:, None]] = -np.inf
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    ref = (p / p.sum(axis=-1, keepdims=True)) @ v64
    err = float(np.abs(out.reshape(ref.shape[0], n_q, -1)[:, rows] - ref).max())
    return err, err / float(np.abs(ref).max())


def run(cfg: AttnConfig, bench: BenchConfig, seed: int) -> list[VariantResult]:
    """Check, measure the peak memory of, and time one attention call."""
    need = refuse_over_budget(cfg)
    rng = np.random.default_rng(seed)
    q, k, v = _inputs(cfg, rng)
    call = _call(cfg, q, k, v)
    tiled = cfg.impl is Impl.flash and cfg.phase is Phase.prefill
    threads = cfg.n_threads
    blas = 1 if tiled else threads  # flash prefill's threads each run one-thread BLAS
    machine, _ = machine_reference(bench.machine_file)  # at the point's thread count
    with threadpool_limits(blas, user_api="blas"):
        tracemalloc.start()
        try:
            out, traffic = call()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        closed = _closed_form(cfg)
        if (traffic.reads, traffic.writes) != closed:
            raise RuntimeError(f"counted traffic {traffic.reads, traffic.writes} != closed form {closed}")
        err, rel = check_rows(cfg, q, k, v, out, rng)
        del out
        start = time.perf_counter()
        result = run_variant(cfg.impl.value, lambda: _time(cfg, bench, call, start), bench)
    if result.status != "ok":
        return [result]
    n, d, h, item = cfg.seq_len, cfg.d_head, cfg.n_heads, q.dtype.itemsize
    pairs = (n * (n + 1) // 2 if cfg.causal else n * n) if cfg.phase is Phase.prefill else n
    m = result.metrics
    m.update(useful_flops=4 * d * pairs * h, peak_bytes=peak, largest_intermediate_bytes=traffic.largest * item,
             estimate_bytes=need, traffic_reads=traffic.reads, traffic_writes=traffic.writes,
             traffic_elements=traffic.total, max_abs_err=err, rel_err=rel, peak_gflops=machine.peak_gflops("float32"),
             n_threads=threads, blas_threads_per_worker=blas if tiled else None)
    m["gflops"] = m["useful_flops"] / m["time_median_s"] / 1e9
    m["pct_of_peak"] = 100 * m["gflops"] / m["peak_gflops"]
    if tiled:
        m["fast_memory_elements"] = fast_memory(d, cfg.block_q, cfg.block_k)
        m["formula_elements"] = flash_formula(h, n, d, cfg.block_q, cfg.block_k)
    else:
        m["formula_elements"] = sum(closed) if cfg.phase is Phase.decode else h * (n * d + n * n)
    return [result]


def _time(cfg: AttnConfig, bench: BenchConfig, call: Callable[[], object], start: float) -> VariantResult:
    timing = bench.measure(call, start)
    return VariantResult(cfg.impl.value, dict(timing.stats()), timings={"attention": timing})


def summary(results: list[VariantResult]) -> str:
    r = results[0]
    if r.status != "ok":
        return r.error
    m = r.metrics
    return (f"{r.variant}: {1e3 * m['time_median_s']:.1f} ms, {m['gflops']:.1f} GFLOP/s useful, peak "
            f"{m['peak_bytes'] / 2**20:.1f} MiB, traffic {m['traffic_elements']:.3g} elements, "
            f"rel err {m['rel_err']:.1e}")
