"""Launch a sweep's points with the configured launcher, and learn each point's outcome.

The launcher gets the configs already composed (:class:`~experiments.framework.plan.PlannedLoader`) and
each point's runtime facts (its number, how many jobs run at once) in ``hydra.job.env_set``. Outcomes
come from each ``JobReturn``. When the launcher itself dies (a killed worker breaks a joblib pool and
takes the other running workers with it), each point's folder says what happened: complete (its
manifest), never started (launched again), or stopped while running. A stopped point runs once more
on its own, so that a point stopped only because another worker died completes, and a point whose
process dies again is failed, with no other point lost beside it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext
from omegaconf import DictConfig

from experiments.framework import store
from experiments.framework.bench import one_line
from experiments.framework.job import JobInfo, PointOutcome
from experiments.framework.plan import Composer, PlannedLoader

log = logging.getLogger(__name__)
#: Runtime facts a job reads from ``hydra.job.env_set`` (Hydra's channel for per-job settings).
POINT_ENV, CONCURRENCY_ENV = "INFER_SWEEP_POINT", "INFER_SWEEP_CONCURRENCY"
#: ``k/N/start``: the job is the k-th of the N passes the sweep runs, the first launched at ``start`` (epoch s).
PROGRESS_ENV = "INFER_SWEEP_PROGRESS"
#: ``r/R``: the job measures pass r of the point's R (``sweep.rounds``).
PASS_ENV = "INFER_SWEEP_PASS"


def launcher_concurrency(launcher_cfg: DictConfig | None, batch: int) -> int:
    """How many jobs the configured launcher runs at once: joblib's ``n_jobs``, SLURM's
    ``array_parallelism``, the whole batch for submitit's local executor, Ray's CPUs per task's
    CPUs, 1 for the basic launcher."""
    if launcher_cfg is None:
        return 1
    target = str(launcher_cfg.get("_target_", ""))
    if "submitit" in target and "Local" in target:
        return batch
    if "RayLauncher" in target:  # Ray runs as many tasks as its CPUs hold
        ray = launcher_cfg.get("ray") or {}
        cpus = (ray.get("init") or {}).get("num_cpus") or os.cpu_count() or 1
        per_task = (ray.get("remote") or {}).get("num_cpus") or 1
        return max(1, min(int(cpus) // int(per_task), batch))
    for key in ("n_jobs", "array_parallelism"):
        value = launcher_cfg.get(key)
        if isinstance(value, int):
            n = (os.cpu_count() or 1) if value < 0 else value
            return max(1, min(n, batch))
    return 1


def launch(sweeper: Any, composer: Composer, points: list[Any], job: Callable[[Any, int], JobInfo],
           known: dict[int, PointOutcome], size: int | None = None, retry: bool = True, pass_num: str = "1/1",
           progress: tuple[int, int, float] | None = None) -> list[Any]:
    """Launch pass ``pass_num`` (``r/R``) of ``points`` in batches (of ``size``, default ``max_batch_size``); fill
    ``known`` with each point's outcome and return the launcher's batches of ``JobReturn``. ``progress`` is
    (passes launched before, passes in the sweep, when the first was launched)."""
    master: DictConfig = sweeper.config
    launcher, real = sweeper.launcher, sweeper.hydra_context.config_loader
    returns, never, stopped = [], [], []
    size = size or sweeper.max_batch_size or len(points) or 1
    before, total, start = progress or (0, len(points), time.time())
    for first in range(0, len(points), size):
        batch = points[first : first + size]
        concurrency = launcher_concurrency(master.hydra.get("launcher"), len(batch))
        planned = {}
        for k, p in enumerate(batch, first + 1):  # the name is percent-quoted: no quote can end the string
            p.runtime = [f"++hydra.job.env_set.{POINT_ENV}={p.index}",
                         f"++hydra.job.env_set.{CONCURRENCY_ENV}={concurrency}",
                         f"++hydra.job.env_set.{PROGRESS_ENV}='{before + k}/{total}/{start:.3f}'",
                         f"++hydra.job.env_set.{PASS_ENV}='{pass_num}'",
                         *([f"hydra.sweep.subdir='{p.name}'"] if p.name else [])]
            planned[(*p.overrides, *p.runtime)] = composer.add(p.config, p.runtime)
        launcher.hydra_context = HydraContext(PlannedLoader(real, planned), sweeper.hydra_context.callbacks)
        try:
            results = launcher.launch([[*p.overrides, *p.runtime] for p in batch], initial_job_idx=first)
        except Exception as exc:  # the launcher died: the files its jobs wrote survive
            log.error("the launcher failed: %s", one_line(exc))
            lost = after_crash(batch, [job(p, concurrency) for p in batch], one_line(exc), known, retry)
            never += lost[0]
            stopped += lost[1]
            continue
        finally:
            launcher.hydra_context = sweeper.hydra_context
        returns.append(results)
        for p, ret in zip(batch, results, strict=True):
            known[p.index] = outcome_of(ret, job(p, concurrency))
    if retry and (never or stopped):
        log.info("launching again: %d point(s) that never started, %d stopped while running (each on its own)",
                 len(never), len(stopped))
        returns += launch(sweeper, composer, never, job, known, pass_num=pass_num)
        returns += launch(sweeper, composer, stopped, job, known, size=1, retry=False, pass_num=pass_num)
    for p in never if not retry else []:
        known[p.index] = PointOutcome(job(p, 1), "not run", ["not run: the launcher failed before starting it"])
    return returns


def launch_passes(sweeper: Any, composer: Composer, todo: list[Any], job: Any, known: dict[int, PointOutcome],
            hooks: Any, rounds: int) -> list[Any]:
    """Pass 1 of every point, then pass 2 of those still ok, and so on, each pass in the order opposite to the pass
    before (A B, then B A: neighbours take turns going first, and every point's passes average to the sweep's middle);
    a resumed point continues after the passes its folder holds."""
    done = {p.index: hooks.passes_done(job(p)) if hooks is not None and p.name else 0 for p in todo}
    if any(done.values()):
        log.info("resuming %d point(s) after the passes already in their folders", sum(map(bool, done.values())))
    total, launched, start, returns = sum(rounds - done[p.index] for p in todo), 0, time.time(), []
    for r in range(1, rounds + 1):
        batch = [p for p in todo if done[p.index] < r and getattr(known.get(p.index), "status", "ok") == "ok"]
        batch = batch if r % 2 else batch[::-1]
        if batch and rounds > 1:
            log.info("pass %d of %d: %d point(s)", r, rounds, len(batch))
        returns += launch(sweeper, composer, batch, lambda p, c=1, r=r: job(p, c, r), known, pass_num=f"{r}/{rounds}",
                          progress=(launched, total, start)) if batch else []
        launched += len(batch)
    return returns


def after_crash(batch: list[Any], jobs: list[JobInfo], why: str, known: dict[int, PointOutcome],
                retry: bool) -> tuple[list[Any], list[Any]]:
    """Each point's outcome from its folder after the launcher died; returns the points never started and,
    when they may run again, those stopped while running."""
    never, stopped = [], []
    for p, job in zip(batch, jobs, strict=True):
        manifest = store.read_manifest(job.output_dir) if p.name else None
        if manifest is not None:
            known[p.index] = PointOutcome(job, str(manifest["status"]), list(manifest.get("errors", [])),
                                          str(manifest.get("summary", "")))
        elif p.name and not (job.output_dir / ".hydra").is_dir():
            never.append(p)
        elif retry and p.name:
            stopped.append(p)
        else:
            again = " when run again on its own" if not retry else ""
            known[p.index] = PointOutcome(job, "failed", [f"it did not finish{again}: the launcher failed with {why} "
                                                          "(a worker killed or out of memory, a full disk ...)"])
    return never, stopped


def outcome_of(ret: JobReturn, job: JobInfo) -> PointOutcome:
    """A point's outcome from its ``JobReturn``: the app's own outcome, ok for any other value, or the
    exception the job raised as one line."""
    if ret.status == JobStatus.COMPLETED:
        value = ret.return_value
        return value if isinstance(value, PointOutcome) else PointOutcome(job, "ok")
    return PointOutcome(job, "failed", [one_line(ret._return_value)])


def folder_of(sweep_dir: Path, name: str | None, index: int) -> Path:
    """A point's folder: named after its overrides, or Hydra's default (its job number)."""
    return sweep_dir / (name or str(index))


def usable(path: Path) -> str | None:
    """Why ``path`` cannot hold a sweep (one line), or None."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create the sweep folder {path}: {exc.strerror or one_line(exc)}"
    if not os.access(path, os.W_OK):
        return f"cannot write into the sweep folder {path}: permission denied"
    return None
