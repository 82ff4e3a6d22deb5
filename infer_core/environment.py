"""What a measurement ran on: Python, NumPy, BLAS and its threads, CPU, git state."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

REPO_ROOT = Path(__file__).resolve().parents[1]


def blas_info() -> dict[str, str | int]:
    """The BLAS NumPy calls, as threadpoolctl reports it right now (thread count included)."""
    libs = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
    if not libs:
        return {"blas": "none", "blas_threads": 0}
    lib = libs[0]
    parts = [lib.get("internal_api", "?"), lib.get("version") or "?", lib.get("architecture") or ""]
    return {"blas": " ".join(p for p in parts if p), "blas_threads": int(lib.get("num_threads", 0))}


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@lru_cache(maxsize=4)
def git_state(root: Path = REPO_ROOT) -> tuple[str, bool | None]:
    """(commit, dirty) of the checkout holding this code; ("unknown", None) outside git.

    Read once per process: a sweep's jobs share it, and git costs tens of milliseconds.
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown", None
    return commit, bool(status.strip())


def capture(concurrency: int = 1) -> dict[str, str | int | bool | None]:
    """One flat record of the environment, keyed by the CSV column names of GUIDE §3."""
    commit, dirty = git_state()
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        **blas_info(),
        "cpu": cpu_model(),
        "n_cpus": usable_cpus(),
        "platform": f"{sys.platform}-{platform.machine()}",
        "git_commit": commit,
        "git_dirty": dirty,
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "concurrency": concurrency,
    }
