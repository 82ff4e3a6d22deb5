"""What the framework costs per job, against bare Hydra measured in the same run.

    python benchmarks/bench_sweep_overhead.py [--points 40] [--big 500]

1. Seconds per job of a 40-point sweep of the smallest KV point (one token, d_model 8, one
   strategy) vs a bare Hydra app sweeping 40 no-op jobs: target ratio <= 1.3.
2. Seconds from the command's start to the launch of the first job of a 500-point sweep: ours
   (every point composed and validated first) vs bare Hydra (whose basic sweeper composes every
   point before launching): target <= 10 s for ours.

Wall-clock times of whole commands (interpreter start included); part 1 alternates ours and bare
Hydra over 3 rounds and takes the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.table import Figure, Table  # noqa: E402

RUN = [sys.executable, str(ROOT / "experiments" / "run.py")]
BARE = [sys.executable, str(ROOT / "benchmarks" / "bare_hydra_app.py")]
SMALLEST = ["kv.seq_len=1", "kv.d_model=8", "kv.n_heads=1", "kv.strategies=[prealloc]", "bench.repeats=5",
            "bench.min_sample_s=0.0001", "bench.threads=1"]


def wall(cmd: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([*cmd, f"hydra.sweep.dir={tmp}/s"], cwd=ROOT, check=True, capture_output=True)
        return time.perf_counter() - start


def time_to_first_job(cmd: list[str], marker: str = "#0 :") -> float:
    """Seconds until the launcher logs its first job, then the command is stopped."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.Popen([*cmd, f"hydra.sweep.dir={tmp}/s"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            for line in proc.stdout:
                if marker in line:
                    return time.perf_counter() - start
            raise RuntimeError(f"{' '.join(cmd[:3])} ... ended without launching a job")
        finally:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=40)
    parser.add_argument("--big", type=int, default=500)
    args = parser.parse_args()
    table = Table("What the framework costs per job, against bare Hydra in the same run")
    n = args.points
    rounds = [(wall([*RUN, "-m", f"seed=range({n})", *SMALLEST]) / n, wall([*BARE, "-m", f"+x=range({n})"]) / n)
              for _ in range(3)]
    ours, bare = np.median([r[0] for r in rounds]), np.median([r[1] for r in rounds])
    table.add(Figure(f"{n}-point sweep: seconds per job, ours / bare Hydra", [o / b for o, b in rounds], "x",
                     ("<=", 1.3), note=f"ours {ours * 1e3:.0f} ms per job (smallest KV point, validated, timed, "
                                       f"files written), bare {bare * 1e3:.0f} ms per no-op job"))
    ours_start = time_to_first_job([*RUN, "-m", f"seed=range({args.big})", *SMALLEST])
    bare_start = time_to_first_job([*BARE, "-m", f"+x=range({args.big})"])
    table.add(Figure(f"{args.big}-point sweep: start to first job, ours", ours_start, " s", ("<=", 10),
                     note=f"every point composed once and validated; bare Hydra {bare_start:.1f} s"))
    return table.finish()


if __name__ == "__main__":
    sys.exit(main())
