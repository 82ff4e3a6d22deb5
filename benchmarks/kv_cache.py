"""KV-cache benchmark: speed ratios against baselines timed in the same run.

    python benchmarks/kv_cache.py [--threads N] [--quick]

1. ``prealloc`` vs ``recompute`` at seq_len 500 (d_model 64, 4 heads): target >= 50x, judged
   at the BLAS thread count where ``recompute`` is fastest (more threads can slow its
   mid-size products down, which would flatter the cache).
2. ``prealloc`` vs ``concat`` at seq_len 4096, d_model 64 and 512: target prealloc never slower.
3. One ``prealloc`` decode step at d_model 4096, 32 heads, context 2048: the bytes it must read
   (weights + cache), the GB/s achieved, and that as a share of a STREAM-style copy bandwidth
   measured here: target >= 60%.

Each comparison is timed interleaved (``measure_interleaved``: one sample of each side per
round, after warm-up and calibration), and its figure is the median of the per-round ratios,
printed with their quartiles: on a shared machine whose speed drifts from second to second, the
drift then cancels within each round. ``--quick`` shrinks the sizes to check that the script
runs (its ratios are not the targets').
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.compare import share_of_copy, spread, verdict
from infer_core.attention import DecoderShape, decode_step, forward, init_decoder
from infer_core.decode import generate, make_cache
from infer_core.environment import blas_info, cpu_model
from infer_core.timing import measure_interleaved, paired_ratios


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
    with threadpool_limits(args.threads, user_api="blas"):
        blas = blas_info()
        print(f"# {cpu_model()}, numpy {np.__version__}, {blas['blas']}, {blas['blas_threads']} BLAS thread(s)")

        part1 = {}
        for threads in sorted({1, blas["blas_threads"]}):  # threads change recompute's mid-size products
            with threadpool_limits(threads, user_api="blas"):
                t = measure_interleaved({s: generate_fn(64, 4, 500, s) for s in ("recompute", "prealloc")},
                                        repeats=args.repeats)
                part1[blas_info()["blas_threads"]] = t
        fair = min(part1, key=lambda n: part1[n]["recompute"].median)  # the baseline at its fastest
        for threads, t in part1.items():
            ratio = paired_ratios(t["recompute"], t["prealloc"])
            pre = t["prealloc"].median
            judged = (f"target >= 50x: {verdict(np.median(ratio) >= 50)}" if threads == fair else
                      f"not judged: recompute is {t['recompute'].median / part1[fair]['recompute'].median:.2f}x "
                      f"slower here than on {fair} thread(s), a weaker baseline")
            print(f"1. seq_len 500, d_model 64, 4 heads, {threads} BLAS thread(s): recompute "
                  f"{t['recompute'].median * 1e3:.1f} ms, prealloc {pre * 1e3:.2f} ms ({pre / 500 * 1e6:.1f} us/token) "
                  f"(medians) -> prealloc faster by {spread(ratio, '.1f', 'x')} ({judged})")

        for d in (64, big_d):
            heads = max(4, d // 64)
            t = measure_interleaved({s: generate_fn(d, heads, long_n, s) for s in ("concat", "prealloc")},
                                    repeats=args.repeats)
            ratio = paired_ratios(t["concat"], t["prealloc"])
            print(f"2. seq_len {long_n}, d_model {d}, {heads} heads: concat {t['concat'].median:.3f} s, prealloc "
                  f"{t['prealloc'].median:.3f} s (medians) -> concat/prealloc {spread(ratio)}, lowest round "
                  f"{ratio.min():.2f} (target >= 1, prealloc never slower: {verdict(np.median(ratio) >= 1)})")

        step, n_bytes = decode_step_fn(4096, 32, ctx)
        c = share_of_copy(step, n_bytes, args.repeats)
        print(f"3. decode step, d_model 4096, 32 heads, context {ctx}: {c.median_s * 1e3:.1f} ms per token, "
              f"reads {n_bytes / 2**20:.0f} MiB (weights + cache) -> {c.gbps:.1f} GB/s; copy bandwidth "
              f"{c.copy_gbps:.1f} GB/s (medians); share {spread(100 * c.share, '.0f', '%')} "
              f"(target >= 60%: {verdict(np.median(c.share) >= 0.6)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
