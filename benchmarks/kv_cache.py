"""KV-cache benchmark: speed ratios against baselines timed in the same run.

    python benchmarks/kv_cache.py [--threads N] [--quick]

1. ``prealloc`` vs ``recompute`` at seq_len 500 (d_model 64, 4 heads): target >= 50x.
2. ``prealloc`` vs ``concat`` at seq_len 4096, d_model 64 and 512: target prealloc never slower.
3. One ``prealloc`` decode step at d_model 4096, 32 heads, context 2048: the bytes it must read
   (weights + cache), the GB/s achieved, and that as a share of a STREAM-style copy bandwidth
   measured here: target >= 60%.

Every figure is a median of the timing harness (warm-up, calibrated samples).
``--quick`` shrinks the sizes to check that the script runs (its ratios are not the targets').
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from threadpoolctl import threadpool_limits

from infer_core.attention import DecoderShape, decode_step, forward, init_decoder
from infer_core.decode import generate, make_cache
from infer_core.environment import blas_info, cpu_model
from infer_core.machine import copy_bandwidth_gbps
from infer_core.timing import measure


def verdict(ok: bool) -> str:
    return "MEETS target" if ok else "MISSES target"


def time_generate(d: int, heads: int, n: int, strategy: str, repeats: int = 5) -> float:
    shape = DecoderShape(d, heads)
    rng = np.random.default_rng(0)
    model = init_decoder(shape, rng)
    x = rng.standard_normal((1, n, d), dtype=np.float32)
    cache = make_cache(strategy, shape, 1, n)
    return measure(lambda: generate(model, x, 0, strategy, cache=cache), repeats=repeats).median


def time_decode_step(d: int, heads: int, context: int) -> tuple[float, int]:
    """Median seconds of one decode step after ``context - 1`` cached tokens, and the bytes it reads."""
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

    median = measure(step, repeats=7).median
    weights = sum(layer.w_qkv.nbytes + layer.w_o.nbytes for layer in model.layers)
    kv = 2 * shape.n_layers * context * shape.d_kv * shape.itemsize
    return median, weights + kv


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS threads for parts 2 and 3 (default: the library's); part 1 runs on 1 and on these")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    args = parser.parse_args()
    long_n, big_d, ctx = (512, 128, 256) if args.quick else (4096, 512, 2048)
    with threadpool_limits(args.threads, user_api="blas"):
        blas = blas_info()
        print(f"# {cpu_model()}, numpy {np.__version__}, {blas['blas']}, {blas['blas_threads']} BLAS thread(s)")

        for threads in sorted({1, blas["blas_threads"]}):  # threads change recompute's mid-size products
            with threadpool_limits(threads, user_api="blas"):
                label = f"{blas_info()['blas_threads']} BLAS thread(s)"
                rec = time_generate(64, 4, 500, "recompute")
                pre = time_generate(64, 4, 500, "prealloc")
            ratio = rec / pre
            print(f"1. seq_len 500, d_model 64, 4 heads, {label}: recompute {rec * 1e3:.1f} ms, prealloc "
                  f"{pre * 1e3:.2f} ms ({pre / 500 * 1e6:.1f} us/token) -> prealloc {ratio:.1f}x faster "
                  f"(target >= 50x: {verdict(ratio >= 50)})")

        for d in (64, big_d):
            heads = max(4, d // 64)
            con = time_generate(d, heads, long_n, "concat")
            pre = time_generate(d, heads, long_n, "prealloc")
            print(f"2. seq_len {long_n}, d_model {d}, {heads} heads: concat {con:.3f} s, prealloc {pre:.3f} s "
                  f"-> concat/prealloc {con / pre:.2f} (target >= 1: {verdict(pre <= con)})")

        step, n_bytes = time_decode_step(4096, 32, ctx)
        bandwidth = copy_bandwidth_gbps()
        achieved = n_bytes / step / 1e9
        share = achieved / bandwidth
        print(f"3. decode step, d_model 4096, 32 heads, context {ctx}: {step * 1e3:.1f} ms per token, "
              f"reads {n_bytes / 2**20:.0f} MiB (weights + cache) -> {achieved:.1f} GB/s; "
              f"copy bandwidth {bandwidth:.1f} GB/s; share {share:.0%} (target >= 60%: {verdict(share >= 0.6)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
