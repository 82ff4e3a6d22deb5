"""Quantization benchmark: speed against baselines timed in the same run.

    python benchmarks/bench_quant.py [--size 4096] [--repeats 15]

1. Our Q8_0 and Q4_0 quantizers vs llama.cpp's gguf-py (``gguf.quants.quantize``) on a
   4096x4096 float32 matrix, bytes checked identical: target >= 2x faster.
2. Symmetric INT8 per-channel quantize throughput as a share of the STREAM copy bandwidth
   measured here on one thread, as the quantizer runs: target >= 35%. Both count the memory
   traffic the operation must make (copy: read + write; quantize: read the float32 weights +
   write the int8 codes and scales).
3. Every K-quant on a TinyLlama-sized layer (``--kq-rows`` x 2048 float32, N(0, 1/2048) weights):
   our quantizer's throughput on all usable threads, target >= 0.3 GB/s of float32 input, with an
   SQNR at or above llama.cpp's own C quantizer (``ggml_quantize_chunk``, no importance matrix) on
   the same tensor; the speed against that quantizer (one thread each, interleaved) is reported.

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
from infer_core.measure.timing import measure_interleaved, paired_ratios
from infer_core.quant import quantize_gguf, quantize_uniform


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096, help="rows = cols of the matrix")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds per comparison")
    parser.add_argument("--kq-rows", type=int, default=5632, help="rows of the K-quant tensor (5632: TinyLlama's FFN)")
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
    k_quants(table, args)
    return table.finish()


def k_quants(table: Table, args: argparse.Namespace) -> None:
    from experiments.shared.llamacpp import ggml_library, ggml_quantize
    from infer_core.measure.environment import usable_cpus
    from infer_core.quant import dequantize_gguf, error_metrics

    lib, threads = ggml_library(), usable_cpus()
    w = (np.random.default_rng(1).standard_normal((args.kq_rows, 2048)) / np.sqrt(2048)).astype(np.float32)
    for fmt in ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k"):
        sqnr = {name: error_metrics(w, dequantize_gguf(q, fmt))["sqnr_db"]
                for name, q in (("ours", quantize_gguf(w, fmt)), ("llama.cpp", ggml_quantize(w, fmt, lib)))}
        t = measure_interleaved({"ours": lambda fmt=fmt: quantize_gguf(w, fmt, threads),
                                 "ours 1 thread": lambda fmt=fmt: quantize_gguf(w, fmt),
                                 "llama.cpp": lambda fmt=fmt: ggml_quantize(w, fmt, lib)}, repeats=args.repeats)
        vs = np.median(paired_ratios(t["llama.cpp"], t["ours 1 thread"]))
        theirs = w.nbytes / t["llama.cpp"].median / 1e9
        table.add(Figure(f"{fmt}: ours on {threads} thread(s), GB/s of float32 input", w.nbytes / t["ours"].per_call_s
                         / 1e9, "GB/s", (">=", 0.3), holds=sqnr["ours"] >= sqnr["llama.cpp"],
                         note=f"SQNR ours {sqnr['ours']:.3f} dB, llama.cpp {sqnr['llama.cpp']:.3f} dB; one thread "
                              f"each, ours {vs:.2f}x llama.cpp's speed ({theirs:.3f} GB/s)"))


if __name__ == "__main__":
    sys.exit(main())
