"""What a measurement ran on: Python, NumPy, BLAS and its threads, CPU, git state (:class:`Environment`)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info


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
def git_state(root: Path) -> tuple[str, bool | None]:
    """(commit, dirty) of the git checkout at ``root``; ("unknown", None) outside git.

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


def _column(meaning: str) -> Any:
    return field(metadata={"help": meaning})


@dataclass(frozen=True)
class Environment:
    """What a measurement ran on: each field is a column of a result row."""

    python: str = _column("Python version")
    numpy: str = _column("NumPy version")
    blas: str = _column("the BLAS NumPy calls: library, version, CPU architecture it was built for")
    blas_threads: int = _column("BLAS threads in force while measuring")
    cpu: str = _column("CPU model name")
    n_cpus: int = _column("CPUs this process may run on (its affinity mask)")
    platform: str = _column("OS and machine architecture")
    git_commit: str = _column("commit of the measured code (`unknown` outside git)")
    git_dirty: bool | None = _column("True when tracked files had uncommitted changes")
    started_utc: str = _column("when the measurement started (ISO 8601, UTC)")
    concurrency: int = _column("measurements running at once on this machine (they share cores and bandwidth)")


def capture(repo: Path, concurrency: int = 1) -> Environment:
    """The environment now; ``repo`` is the checkout whose commit is recorded, ``concurrency`` how many
    measurements run at once."""
    commit, dirty = git_state(Path(repo))
    blas = blas_info()
    return Environment(
        python=platform.python_version(),
        numpy=np.__version__,
        blas=str(blas["blas"]),
        blas_threads=int(blas["blas_threads"]),
        cpu=cpu_model(),
        n_cpus=usable_cpus(),
        platform=f"{sys.platform}-{platform.machine()}",
        git_commit=commit,
        git_dirty=dirty,
        started_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        concurrency=concurrency,
    )
