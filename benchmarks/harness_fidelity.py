"""Does the timing harness tell the truth? Checks against plain timing in the same run.

    python benchmarks/harness_fidelity.py [--machine outputs/machine.json]

1. A 1024x1024 sgemm: the harness's median vs the median of 30 individually timed plain calls
   (``perf_counter_ns`` around each): target within 5%.
2. The harness's own cost per timed call of an empty function: target <= 1 µs.
3. The best sgemm the matmul experiment's way (harness median, preallocated output) over
   1024, 2048 and 4096 against the peak cached in the machine reference (measured if absent):
   target within 10%.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.compare import verdict
from infer_core.environment import blas_info, cpu_model
from infer_core.machine import DEFAULT_CACHE, reference
from infer_core.timing import measure


def sgemm(n: int):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    return lambda: np.matmul(a, b, out=c)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machine", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    blas = blas_info()
    print(f"# {cpu_model()}, numpy {np.__version__}, {blas['blas']}, {blas['blas_threads']} BLAS thread(s)")

    fn = sgemm(1024)
    harness = measure(fn, warmup=3, repeats=15).median
    plain = []
    for _ in range(3):
        fn()  # the same warm-up the harness had
    for _ in range(30):
        t0 = time.perf_counter_ns()
        fn()
        plain.append(time.perf_counter_ns() - t0)
    plain_median = float(np.median(plain)) / 1e9
    diff = harness / plain_median - 1
    print(f"1. sgemm 1024: harness median {harness * 1e3:.3f} ms, plain loop of 30 calls median "
          f"{plain_median * 1e3:.3f} ms -> {diff:+.1%} (target within 5%: {verdict(abs(diff) <= 0.05)})")

    empty = measure(lambda: None, repeats=15, min_sample_s=0.01)
    print(f"2. empty function: {empty.median * 1e9:.0f} ns per timed call ({empty.inner_loops} calls per sample) "
          f"(target <= 1 µs: {verdict(empty.median <= 1e-6)})")

    ref, measured = reference(args.machine)
    best = max(2 * n**3 / measure(sgemm(n), repeats=5).median / 1e9 for n in (1024, 2048, 4096))
    share = best / ref.sgemm_gflops
    source = "measured now" if measured else f"cached {ref.measured_utc}"
    print(f"3. best sgemm (median of the harness) {best:.1f} GFLOP/s vs machine peak {ref.sgemm_gflops:.1f} GFLOP/s "
          f"({args.machine}, {source}) -> {share:.1%} (target within 10%: {verdict(abs(share - 1) <= 0.10)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
