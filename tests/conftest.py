"""Shared helpers: run the Hydra app in a subprocess, read CSVs back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from experiments.framework.app import register_schemas
from experiments.registry import EXPERIMENTS

register_schemas(EXPERIMENTS)  # tests that compose configs in-process need the schemas
ROOT = Path(__file__).resolve().parents[1]
#: Small, fast measurement settings for end-to-end runs (the protocol still applies).
FAST_BENCH = ["bench.repeats=5", "bench.min_sample_s=0.0005"]


def run_app(*args: str, cwd: Path = ROOT, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python experiments/run.py ARGS`` with the test's interpreter; returns the finished process."""
    return subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "run.py"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )


def run_apps(*arg_lists: list[str], timeout: float = 400, at_once: int = 2) -> list[subprocess.CompletedProcess]:
    """``run_app`` for each list of arguments, ``at_once`` of them at a time (a fixture's independent sweeps: each
    is mostly one interpreter starting and one thread computing); the finished processes in the lists' order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(at_once) as pool:
        return list(pool.map(lambda args: run_app(*args, timeout=timeout), arg_lists))


def run_report(*args: str) -> subprocess.CompletedProcess:
    """``python experiments/report.py ARGS`` with the test's interpreter; returns the finished process."""
    return subprocess.run([sys.executable, str(ROOT / "experiments" / "report.py"), *args], capture_output=True,
                          text=True)


@pytest.fixture(scope="session")
def small_sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One sweep shared by several tests: two good points and one invalid one, run with
    sweep.skip_invalid=true so the invalid point gets its failed row."""
    sweep = tmp_path_factory.mktemp("sweep")
    proc = run_app("-m", "kv.seq_len=6,12,0", "kv.d_model=16", "kv.n_heads=2", f"hydra.sweep.dir={sweep}",
                   "sweep.skip_invalid=true", *FAST_BENCH)
    return sweep, proc


def small_machine_file(path: Path, threads: tuple[int, ...] = (1, 2)) -> Path:
    """A machine reference at ``path`` for each BLAS thread count, measured on tiny sizes by the machine experiment (a
    few seconds, not the full reference's half minute; in a job's process, so its key is the one a job computes):
    for tests that need a roofline, not its accuracy."""
    proc = run_app("-m", "experiment=machine", "machine.gemm_sizes=[64]", "machine.stream_mib=4",
                   f"bench.threads={','.join(map(str, threads))}", f"bench.machine_file={path}",
                   f"hydra.sweep.dir={path.parent / (path.stem + '_sweep')}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return path


def job_dirs(sweep: Path) -> list[Path]:
    """The job folders of a sweep (named after their overrides), sorted."""
    return sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "results.csv").exists())
