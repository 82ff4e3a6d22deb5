"""The report and the comparison on large sweeps: 1,000 job folders each.

    python benchmarks/bench_report.py [--jobs 1000] [--rounds 3]

Runs one small real matmul sweep (3 points), then makes two sweeps of ``--jobs`` job folders from it: each
job a copy of a real one under a new square size (its own ``matmul.size``, ``config_hash`` and job number),
its samples the template's median times seeded noise (5% CV; in the second sweep every third point 1.3x slower).

1. ``python experiments/report.py SWEEP``: the whole command (interpreter start included): target <= 5 s.
2. ``python experiments/report.py compare A B``: target <= 10 s.

Each figure is the median wall time over ``--rounds`` runs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.table import Figure, Table  # noqa: E402

RUN = [sys.executable, str(ROOT / "experiments" / "run.py")]
REPORT = [sys.executable, str(ROOT / "experiments" / "report.py")]


def make_sweep(seed_jobs: list[Path], out: Path, jobs: int, seed: int, slower: float) -> None:
    """``jobs`` folders under ``out``, each a real job's files under a new size, samples noised (and 1/3 of the
    points made ``slower``)."""
    rng = np.random.default_rng(seed)
    templates = [(pd.read_csv(j / "results.csv"), pd.read_csv(j / "samples.csv")) for j in seed_jobs]
    for i in range(jobs):
        rows, samples = (t.copy() for t in templates[i % len(templates)])
        size = 1000 + i
        job = out / f"matmul.size={size}"
        job.mkdir(parents=True)
        rows["matmul.size"], rows["job_num"], rows["config_hash"] = size, i, f"{i:016x}"
        samples["job_num"], samples["config_hash"] = i, f"{i:016x}"
        # the template's median with seeded 5% noise: a real job's few samples may hold an outlier that every
        # copy would inherit
        samples["time_s"] = (samples["time_s"].median() * rng.normal(1, 0.05, len(samples))
                             * (slower if i % 3 == 0 else 1.0))
        rows.to_csv(job / "results.csv", index=False)
        samples.to_csv(job / "samples.csv", index=False)


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    table = Table(f"Report and comparison over {args.jobs} job folders per sweep")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run([*RUN, "-m", "experiment=matmul", "matmul.size=64,96,128", "matmul.weights=[fp32]",
                        "bench.repeats=5", "bench.min_sample_s=0.0005", f"hydra.sweep.dir={root / 'seed'}"],
                       cwd=ROOT, check=True, capture_output=True)
        seeds = sorted(p for p in (root / "seed").iterdir() if (p / "samples.csv").exists())
        make_sweep(seeds, root / "a", args.jobs, 1, 1.0)
        make_sweep(seeds, root / "b", args.jobs, 2, 1.3)
        report = [wall([*REPORT, str(root / "a"), "--out", str(root / f"report{r}")]) for r in range(args.rounds)]
        table.add(Figure(f"report over {args.jobs} jobs", report, "s", ("<=", 5),
                         note="python experiments/report.py SWEEP, interpreter start included"))
        compare = [wall([*REPORT, "compare", str(root / "a"), str(root / "b"), "--out", str(root / f"cmp{r}")])
                   for r in range(args.rounds)]
        lines = pd.read_csv(root / "cmp0" / "compare.csv")
        table.add(Figure(f"compare two sweeps of {args.jobs} jobs", compare, "s", ("<=", 10),
                         holds=len(lines) == args.jobs,
                         note=f"{len(lines)} pairs: {(lines['verdict'] == 'slower').sum()} slower (1/3 were made "
                              f"1.3x slower), {(lines['verdict'] == 'faster').sum()} faster"))
        shutil.rmtree(root, ignore_errors=True)
    return table.finish()


if __name__ == "__main__":
    sys.exit(main())
