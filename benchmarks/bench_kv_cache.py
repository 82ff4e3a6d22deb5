"""KV-cache benchmark: speed ratios against baselines timed in the same run.

    python benchmarks/bench_kv_cache.py [--threads N] [--quick]

1. ``prealloc`` vs ``recompute`` at seq_len 500 (d_model 64, 4 heads): target >= 50x, judged
   at the BLAS thread count where ``recompute`` is fastest (more threads can slow its
   mid-size products down, which would flatter the cache).
2. ``prealloc`` vs ``concat`` at seq_len 4096, d_model 64 and 512: target prealloc never slower.
3. One ``prealloc`` decode step at d_model 4096, 32 heads, context 2048: the bytes it must read
   (weights + cache), the GB/s achieved, and that as a share of a STREAM-style copy bandwidth
   measured here: target >= 60%.

Each comparison is timed interleaved (``measure_interleaved``: one sample of each side per
round, after warm-up and calibration), and its figure is the median of the per-round ratios,
printed with their quartiles (``benchmarks/table.py``); the exit code is 1 when a target is missed.
``--quick`` shrinks the sizes to check that the script runs (its figures are then not judged).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.bandwidth import share_of_copy
from benchmarks.table import Figure, Table
from infer_core.decoder.decode import generate, make_cache
from infer_core.decoder.model import DecoderShape, decode_step, forward, init_decoder
from infer_core.measure.environment import blas_info
from infer_core.measure.timing import measure_interleaved, paired_ratios


def generate_fn(d: int, heads: int, n: int, strategy: str):
    """A call generating ``n`` tokens with ``strategy`` (its cache allocated once, outside the call)."""
    shape = DecoderShape(d, heads)
    rng = np.random.default_rng(0)
    model = init_decoder(shape, rng)
    x = rng.standard_normal((1, n, d), dtype=np.float32)
    cache = make_cache(strategy, shape, 1, n)
    return lambda: generate(model, x, 0, strategy, cache=cache)


def decode_step_fn(d: int, heads: int, context: int):
    """A call of one decode step after ``context - 1`` cached tokens, and the bytes it must read."""
    shape = DecoderShape(d, heads)
    rng = np.random.default_rng(0)
    model = init_decoder(shape, rng)
    x = rng.standard_normal((1, context, d), dtype=np.float32)
    cache = make_cache("prealloc", shape, 1, context)
    forward(model, x[:, : context - 1], cache)  # prefill
    token = x[:, context - 1]

    def step() -> None:
        cache.length[:] = [context - 1] * shape.n_layers
        decode_step(model, token, cache)

    weights = sum(layer.w_qkv.nbytes + layer.w_o.nbytes for layer in model.layers)
    kv = 2 * shape.n_layers * context * shape.d_kv * shape.itemsize
    return step, weights + kv


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS threads for parts 2 and 3 (default: the library's); part 1 runs on 1 and on these")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds per comparison")
    args = parser.parse_args()
    long_n, big_d, ctx = (512, 128, 256) if args.quick else (4096, 512, 2048)
    judged = not args.quick
    with threadpool_limits(args.threads, user_api="blas"):
        table = Table("KV-cache strategies: ratios timed interleaved in this run" + (" (--quick: not judged)"
                                                                                     if args.quick else ""))
        part1 = {}
        for threads in sorted({1, blas_info()["blas_threads"]}):  # threads change recompute's mid-size products
            with threadpool_limits(threads, user_api="blas"):
                t = measure_interleaved({s: generate_fn(64, 4, 500, s) for s in ("recompute", "prealloc")},
                                        repeats=args.repeats)
                part1[blas_info()["blas_threads"]] = t
        fair = min(part1, key=lambda n: part1[n]["recompute"].median)  # the baseline at its fastest
        for threads, t in part1.items():
            pre, slower = t["prealloc"].median, t["recompute"].median / part1[fair]["recompute"].median
            why = "" if threads == fair else (f"not judged: recompute {slower:.2f}x slower here than on {fair} "
                                              "thread(s), a weaker baseline; ")
            table.add(Figure(f"recompute / prealloc, 500 tokens, d_model 64, {threads} thread(s)",
                             paired_ratios(t["recompute"], t["prealloc"]), "x",
                             (">=", 50) if judged and threads == fair else None,
                             note=f"{why}recompute {t['recompute'].median * 1e3:.1f} ms, prealloc {pre * 1e3:.2f} ms "
                                  f"({pre / 500 * 1e6:.1f} us/token)"))

        for d in (64, big_d):
            heads = max(4, d // 64)
            t = measure_interleaved({s: generate_fn(d, heads, long_n, s) for s in ("concat", "prealloc")},
                                    repeats=args.repeats)
            ratio = paired_ratios(t["concat"], t["prealloc"])
            table.add(Figure(f"concat / prealloc, {long_n} tokens, d_model {d}", ratio, "x",
                             (">=", 1) if judged else None,
                             note=f"concat {t['concat'].median:.3f} s, prealloc {t['prealloc'].median:.3f} s; "
                                  f"lowest round {ratio.min():.2f}"))

        step, n_bytes = decode_step_fn(4096, 32, ctx)
        c = share_of_copy(step, n_bytes, args.repeats)
        table.add(Figure(f"decode step d_model 4096, context {ctx}: share of copy bandwidth", 100 * c.share, "%",
                         (">=", 60) if judged else None,
                         note=f"{c.median_s * 1e3:.1f} ms per token reading {n_bytes / 2**20:.0f} MiB -> "
                              f"{c.gbps:.1f} GB/s; copy {c.copy_gbps:.1f} GB/s"))
    return table.finish()


if __name__ == "__main__":
    sys.exit(main())
