"""Does the timing harness tell the truth? Checks against plain timing in the same run.

    python benchmarks/bench_harness.py [--machine outputs/machine.json]

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

from benchmarks.table import Figure, Table
from infer_core.measure.machine import reference
from infer_core.measure.timing import measure


def sgemm(n: int):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    return lambda: np.matmul(a, b, out=c)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machine", type=Path, default=Path("outputs/machine.json"))
    args = parser.parse_args()
    table = Table("Does the timing harness tell the truth? Checked against plain timing in this run")

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
    table.add(Figure("sgemm 1024: harness vs plain median, difference", 100 * abs(harness / plain_median - 1), "%",
                     ("<=", 5), note=f"harness {harness * 1e3:.3f} ms, 30 plain calls {plain_median * 1e3:.3f} ms"))

    empty = measure(lambda: None, repeats=15, min_sample_s=0.01)
    table.add(Figure("harness cost per timed call (empty function)", empty.per_call_s * 1e9, " ns", ("<=", 1000),
                     note=f"{empty.inner_loops[0]} calls per sample"))

    ref, measured = reference(args.machine)
    best = max(2 * n**3 / measure(sgemm(n), repeats=5).median / 1e9 for n in (1024, 2048, 4096))
    source = "measured now" if measured else f"cached {ref.measured_utc}"
    table.add(Figure("best sgemm vs machine peak, difference", 100 * abs(best / ref.sgemm_gflops - 1), "%",
                     ("<=", 10), note=f"{best:.1f} vs {ref.sgemm_gflops:.1f} GFLOP/s ({args.machine}, {source})"))
    return table.finish()


if __name__ == "__main__":
    sys.exit(main())
