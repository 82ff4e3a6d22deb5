"""FlashAttention in NumPy against the dense form: memory, speed, and its share of the machine's peak.

    python benchmarks/bench_attention.py [--machine outputs/machine.json] [--rounds 7]

One head, d_head 128, float32, every CPU this process may use (flash: that many threads over query
blocks, one BLAS thread each; naive: that many BLAS threads). The dense form is the honest one
(``infer_core.decoder.attention.naive_attention``): all N×N scores in one array, the causal mask written into it,
softmax in place, then P·V, each a single NumPy/BLAS call.

1. Peak memory of one causal call at N = 16384 (tracemalloc): flash (blocks 256) / naive <= 1%.
2. Causal, N = 4096: naive time / flash time at flash's best square block, interleaved rounds: >= 2.
3. Not causal, N = 4096: the same ratio: >= 1 (flash no slower).
4. Flash prefill, causal, N = 8192: useful FLOPs (2·N²·d: QKᵀ and P·V over the lower triangle) per
   second against the machine's sgemm peak at the same thread count: >= 50%.
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.table import Figure, Table
from infer_core.decoder.attention import flash_attention, naive_attention
from infer_core.measure.environment import usable_cpus
from infer_core.measure.machine import reference
from infer_core.measure.timing import measure, measure_interleaved, paired_ratios

D = 128


def inputs(n: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    return tuple(rng.standard_normal((1, n, D), dtype=np.float32) for _ in range(3))


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machine", type=Path, default=Path("outputs/machine.json"))
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    threads = usable_cpus()
    table = Table(f"FlashAttention vs the dense form, one head, d_head {D}, float32, {threads} threads")

    def flash(q, k, v, causal, block):
        with threadpool_limits(1, user_api="blas"):
            return flash_attention(q, k, v, causal, block, block, threads=threads)

    with threadpool_limits(threads, user_api="blas"):
        machine, _ = reference(args.machine)
        q, k, v = inputs(16384)
        dense = peak_bytes(lambda: naive_attention(q, k, v, True))
        tiled = peak_bytes(lambda: flash(q, k, v, True, 256))
        table.add(Figure("peak memory, causal N 16384: flash / naive", 100 * tiled / dense, "%", ("<=", 1),
                         note=f"{tiled / 2**20:.1f} MiB vs {dense / 2**20:.0f} MiB (tracemalloc, blocks 256)"))
        del q, k, v

        q, k, v = inputs(4096)
        for causal in (True, False):
            candidates = {b: measure(lambda b=b, c=causal: flash(q, k, v, c, b), repeats=5, min_sample_s=0.05).median
                          for b in (128, 256, 512, 1024)}
            best = min(candidates, key=candidates.get)
            t = measure_interleaved({"naive": lambda c=causal: naive_attention(q, k, v, c),
                                     "flash": lambda c=causal, b=best: flash(q, k, v, c, b)}, repeats=args.rounds)
            ratios = paired_ratios(t["naive"], t["flash"])
            table.add(Figure(f"{'causal' if causal else 'not causal'} N 4096: naive / flash time", ratios, "x",
                             (">=", 2.0 if causal else 1.0),
                             note=f"flash blocks {best}: {1e3 * t['flash'].median:.0f} ms, naive "
                                  f"{1e3 * t['naive'].median:.0f} ms"))
        del q, k, v

        n = 8192
        q, k, v = inputs(n)
        timing = measure(lambda: flash(q, k, v, True, 512), repeats=args.rounds, min_sample_s=0.05)
        useful = 2 * n * n * D / timing.per_call_s / 1e9
        peak = machine.peak_gflops("float32")
        table.add(Figure(f"flash causal N {n}: useful GFLOP/s / sgemm peak", 100 * useful / peak, "%", (">=", 50),
                         note=f"{np.median(useful):.1f} of {peak:.1f} GFLOP/s (blocks 512, {args.machine})"))
    return table.finish()


if __name__ == "__main__":
    sys.exit(main())
