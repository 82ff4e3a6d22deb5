"""A job's identity (where a point writes, which pass it is) and what became of it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from experiments.framework.spec import Experiment, VariantResult
from infer_core.measure import environment


@dataclass(frozen=True)
class JobInfo:
    """Where a point writes and how its rows identify it (runtime facts, not config)."""

    output_dir: Path
    overrides: tuple[str, ...] = ()
    job_num: int = 0
    run_id: str = ""
    concurrency: int = 1
    cwd: Path | None = None  # where the command was started: relative project paths resolve against it
    progress: str = ""  # "k/N/start" from the sweeper: the k-th of N passes run, the launch began at start
    pass_num: int = 0  # which pass of the point this job measures (0: every pass of sweep.rounds, here)
    passes: int = 0  # how many passes the point gets (0: sweep.rounds, read from the config)

    def position(self, now: float | None = None) -> str:
        """``[k/N, about 2 min left]`` in a sweep (the time left from the pace so far), "" in a single run."""
        try:
            k, n, start = self.progress.split("/")
            k, n, started = int(k), int(n), float(start)
        except ValueError:
            return ""
        if k <= 1:
            return f"[{k}/{n}]"
        left = ((now if now is not None else time.time()) - started) / (k - 1) * (n - k + 1)
        return f"[{k}/{n}, about {duration(left)} left]"


def duration(seconds: float) -> str:
    """A time left in words: ``40 s``, ``3 min``, ``1 h 20 min``."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{int(seconds // 3600)} h {round(seconds % 3600 / 60)} min"


@dataclass
class PointOutcome:
    """What became of one point: its status, its errors (one line each), a summary."""

    job: JobInfo
    status: str
    errors: list[str] = field(default_factory=list)
    summary: str = ""

    @property
    def label(self) -> str:
        return " ".join(self.job.overrides) or "(defaults)"


def blas_threads(requested: int | None, concurrency: int) -> int | None:
    """BLAS threads for a job: as requested, else the usable cores shared by the jobs running at once."""
    if requested is not None or concurrency <= 1:
        return requested
    return max(1, environment.usable_cpus() // concurrency)


def summarize(job: JobInfo, results: list[VariantResult], exp: Experiment | None) -> PointOutcome:
    """The point's status, its errors (one line each) and the experiment's one-line summary."""
    errors = [f"{r.variant}: {r.error}" if r.variant else r.error for r in results if r.status == "failed"]
    if not errors and not any(r.status == "ok" for r in results):  # a point is complete only if it measured
        errors = ["nothing measured: every variant was skipped over its time budget (raise bench.max_seconds)"]
    status = "failed" if errors else "ok"
    summary = exp.summary(results) if exp and not errors else "; ".join(errors)
    skipped = [r.variant for r in results if r.status == "skipped"]
    if skipped:
        summary += f" (skipped over budget: {', '.join(skipped)})"
    return PointOutcome(job, status, errors, summary)
