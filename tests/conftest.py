"""Shared helpers: run the Hydra app in a subprocess, read CSVs back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Small, fast measurement settings for end-to-end runs (the protocol still applies).
FAST_BENCH = ["bench.repeats=5", "bench.min_sample_s=0.0005"]


def run_app(*args: str, cwd: Path = ROOT, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python experiments/run.py ARGS`` with the test's interpreter; returns the finished process."""
    return subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "run.py"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="session")
def small_sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One sweep shared by several tests: two good points and one bad one."""
    sweep = tmp_path_factory.mktemp("sweep")
    proc = run_app("-m", "kv.seq_len=6,12,0", "kv.d_model=16", "kv.n_heads=2", f"hydra.sweep.dir={sweep}",
                   *FAST_BENCH)
    return sweep, proc
