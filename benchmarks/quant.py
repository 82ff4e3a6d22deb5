"""Quantization benchmark: speed against baselines timed in the same run.

    python benchmarks/quant.py [--size 4096]

1. Our Q8_0 and Q4_0 quantizers vs llama.cpp's gguf-py (``gguf.quants.quantize``) on a
   4096x4096 float32 matrix, bytes checked identical: target >= 2x faster.
2. Symmetric INT8 per-channel quantize throughput as a share of the STREAM copy bandwidth
   measured here on one thread, as the quantizer runs: target >= 35%. Both count the memory
   traffic the operation must make (copy: read + write; quantize: read the float32 weights +
   write the int8 codes and scales).

Timings are medians of the harness (warm-up, calibrated samples, GC off); BLAS plays no part.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from gguf import GGMLQuantizationType, quants

from infer_core.environment import cpu_model
from infer_core.machine import copy_bandwidth_gbps
from infer_core.quant import quantize_gguf, quantize_uniform
from infer_core.timing import measure


def verdict(ok: bool) -> str:
    return "MEETS target" if ok else "MISSES target"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096, help="rows = cols of the matrix")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    n = args.size
    w = np.random.default_rng(0).normal(0, 0.02, (n, n)).astype(np.float32)
    print(f"# {cpu_model()}, numpy {np.__version__}, matrix {n}x{n} float32 ({w.nbytes / 2**20:.0f} MiB)")

    for fmt in ("q8_0", "q4_0"):
        qtype = getattr(GGMLQuantizationType, fmt.upper())
        same = np.array_equal(quantize_gguf(w, fmt), quants.quantize(w, qtype))
        ref = measure(lambda qtype=qtype: quants.quantize(w, qtype), repeats=args.repeats).median
        ours = measure(lambda fmt=fmt: quantize_gguf(w, fmt), repeats=args.repeats).median
        print(f"1. {fmt}: gguf-py {ref * 1e3:.1f} ms, ours {ours * 1e3:.1f} ms -> {ref / ours:.2f}x faster, "
              f"bytes identical: {same} (target >= 2x: {verdict(ref / ours >= 2 and same)})")

    copy = copy_bandwidth_gbps(threads=1)  # the quantizer runs on one thread: so does the copy
    t = measure(lambda: quantize_uniform(w, 8, "symmetric", "per_channel"), repeats=args.repeats)
    q = quantize_uniform(w, 8, "symmetric", "per_channel")
    traffic = w.nbytes + q.nbytes
    gbps = traffic / t.median / 1e9
    best = traffic / float(t.per_call_s.min()) / 1e9
    print(f"2. int8 symmetric per-channel: median {t.median * 1e3:.1f} ms; reads {w.nbytes / 2**20:.0f} MiB + writes "
          f"{q.nbytes / 2**20:.1f} MiB -> {gbps:.2f} GB/s ({w.nbytes / t.median / 1e9:.2f} GB/s of input); "
          f"STREAM copy (1 thread, like the quantizer; best of 10) {copy:.1f} GB/s; share {gbps / copy:.0%} "
          f"(target >= 35%: {verdict(gbps / copy >= 0.35)}); best sample {best:.2f} GB/s, {best / copy:.0%} of copy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
