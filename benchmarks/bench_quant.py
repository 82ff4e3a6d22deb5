"""Quantization benchmark: speed against baselines timed in the same run.

    python benchmarks/bench_quant.py [--size 4096] [--repeats 15]

1. Our Q8_0 and Q4_0 quantizers vs llama.cpp's gguf-py (``gguf.quants.quantize``) on a
   4096x4096 float32 matrix, bytes checked identical: target >= 2x faster.
2. Symmetric INT8 per-channel quantize throughput as a share of the STREAM copy bandwidth
   measured here on one thread, as the quantizer runs: target >= 35%. Both count the memory
   traffic the operation must make (copy: read + write; quantize: read the float32 weights +
   write the int8 codes and scales).

Each comparison is timed interleaved (``measure_interleaved``: one sample of each side per
round, warm-up and calibration first, GC off), and its figure is the median of the per-round
ratios, printed with their quartiles (``benchmarks/table.py``): on a shared machine whose speed
drifts from second to second, the drift then cancels within each round. BLAS plays no part. The exit
code is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from gguf import GGMLQuantizationType, quants

from benchmarks.bandwidth import share_of_copy
from benchmarks.table import Figure, Table
from infer_core.quant import quantize_gguf, quantize_uniform
from infer_core.timing import measure_interleaved, paired_ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096, help="rows = cols of the matrix")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds per comparison")
    args = parser.parse_args()
    n = args.size
    w = np.random.default_rng(0).normal(0, 0.02, (n, n)).astype(np.float32)
    table = Table(f"Quantizers on a {n}x{n} float32 matrix ({w.nbytes / 2**20:.0f} MiB), timed interleaved")

    for fmt in ("q8_0", "q4_0"):
        qtype = getattr(GGMLQuantizationType, fmt.upper())
        same = np.array_equal(quantize_gguf(w, fmt), quants.quantize(w, qtype))
        t = measure_interleaved({"gguf": lambda qtype=qtype: quants.quantize(w, qtype),
                                 "ours": lambda fmt=fmt: quantize_gguf(w, fmt)}, repeats=args.repeats)
        table.add(Figure(f"{fmt}: gguf-py / ours (bytes identical)", paired_ratios(t["gguf"], t["ours"]), "x",
                         (">=", 2), holds=same, note=f"gguf-py {t['gguf'].median * 1e3:.1f} ms, ours "
                                                     f"{t['ours'].median * 1e3:.1f} ms; bytes identical: {same}"))

    q = quantize_uniform(w, 8, "symmetric", "per_channel")
    c = share_of_copy(lambda: quantize_uniform(w, 8, "symmetric", "per_channel"), w.nbytes + q.nbytes,
                      args.repeats, threads=1)  # the quantizer runs on one thread: so does the copy
    table.add(Figure("int8 per-channel quantize: share of 1-thread copy bandwidth", 100 * c.share, "%", (">=", 35),
                     note=f"{c.median_s * 1e3:.1f} ms: reads {w.nbytes / 2**20:.0f} MiB, writes "
                          f"{q.nbytes / 2**20:.1f} MiB -> {c.gbps:.2f} GB/s; copy {c.copy_gbps:.1f} GB/s"))
    return table.finish()


if __name__ == "__main__":
    sys.exit(main())
