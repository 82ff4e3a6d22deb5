"""The sweep behind the ``infer`` Hydra sweeper (``hydra_plugins/infer_sweep``), usable by any Hydra app.

1. Expand the overrides into points and compose each once (:mod:`~experiments.framework.plan`).
2. If the app's task function carries ``sweep_hooks`` (:class:`~experiments.framework.point.PointApp`),
   check every point before any runs, and skip the points already complete with the same config.
3. Launch the rest with the configured launcher, handing it the composed configs.
4. Take each point's outcome from its ``JobReturn``, log one line per point, and fail listing
   every failed point. An app without hooks or ``sweep.*`` settings gets Hydra's folders and defaults.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from experiments.framework.bench import one_line
from experiments.framework.plan import RUN_CONTROL, Composer, PlannedLoader, expand, point_dir_name
from experiments.framework.point import JobInfo, PointOutcome
from infer_core.files import write_text_atomic

log = logging.getLogger(__name__)
#: Runtime facts a job reads from ``hydra.job.env_set`` (Hydra's channel for per-job settings).
POINT_ENV, CONCURRENCY_ENV = "INFER_SWEEP_POINT", "INFER_SWEEP_CONCURRENCY"


class SweepError(CompactHydraException):
    """A sweep that cannot run or that had failures: Hydra prints the message alone and exits 1."""


@dataclass
class SweepPoint:
    """One point of the sweep: its overrides, folder name, composed config or error."""

    index: int
    overrides: list[str]
    name: str | None = None  # folder under the sweep dir; None: Hydra's own ``hydra.sweep.subdir``
    config: DictConfig | None = None
    error: str = ""
    runtime: list[str] = field(default_factory=list)  # hydra overrides carrying its runtime facts


def settings(master: DictConfig) -> tuple[bool, bool]:
    """``(sweep.resume, sweep.skip_invalid)``, defaults ``(True, False)`` for apps without them."""
    node = master.get("sweep")
    node = node if isinstance(node, DictConfig) else {}
    return bool(node.get("resume", True)), bool(node.get("skip_invalid", False))


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


def run_sweep(sweeper: Any, arguments: list[str]) -> list[Any]:
    """The whole sweep (see the module docstring); returns the launcher's batches of ``JobReturn``."""
    master: DictConfig = sweeper.config
    resume, skip_invalid = settings(master)
    hooks = getattr(sweeper.task_function, "sweep_hooks", None)
    sweep_dir, loader = Path(master.hydra.sweep.dir).absolute(), sweeper.hydra_context.config_loader
    start = time.perf_counter()
    parser = OverridesParser.create(config_loader=loader)
    points = [SweepPoint(i, o) for i, o in enumerate(expand(parser.parse_overrides(
        sweeper._parse_config() + list(arguments))))]
    composer = Composer(loader, master)
    for p in points:
        p.name = point_dir_name(p.overrides) if sweeper.subdir_from_overrides else None
        try:
            p.config = composer.compose(p.overrides)
        except Exception as exc:  # a composition error makes the point invalid
            p.error = " ".join(str(exc).split("Config search path:")[0].split())
            continue
        if hooks is not None and p.name is not None:
            p.error = hooks.check(_task(p.config), sweep_dir / p.name) or ""
    invalid = [p for p in points if p.error]
    log.info("checked %d point(s) in %.2f s: %d valid, %d invalid", len(points), time.perf_counter() - start,
             len(points) - len(invalid), len(invalid))
    if invalid and not (skip_invalid and hooks is not None):
        listing = "\n".join(f"  #{p.index} {' '.join(p.overrides)}: {p.error}" for p in invalid)
        hint = " (sweep.skip_invalid=true runs the valid ones)" if hooks is not None else ""
        raise SweepError(f"{len(invalid)} of {len(points)} sweep point(s) are invalid, nothing was run{hint}:\n"
                         f"{listing}")

    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(sweep_dir / "multirun.yaml", OmegaConf.to_yaml(master))

    def job(p: SweepPoint, concurrency: int = 1) -> JobInfo:
        shown = tuple(o for o in p.overrides if not o.startswith(RUN_CONTROL))
        return JobInfo(sweep_dir / (p.name or str(p.index)), shown, p.index, sweep_dir.name, concurrency)

    known: dict[int, PointOutcome] = {p.index: hooks.record_invalid(job(p), _task(p.config), p.error)
                                      for p in invalid}
    todo = []
    for p in points:
        if p.error:
            continue
        done = hooks.completed(job(p)) if hooks is not None and resume and p.name is not None else None
        if done is not None:
            known[p.index] = done
        else:
            todo.append(p)
    skipped = len(points) - len(invalid) - len(todo)
    if skipped:
        log.info("skipping %d complete point(s) already in %s (sweep.resume=false recomputes them)", skipped,
                 sweep_dir)
    returns = _launch(sweeper, composer, master, todo, job, known)
    finish([known[p.index] for p in points], skipped)
    return returns


def _task(cfg: DictConfig | None) -> DictConfig | None:
    """The task part of a composed config (without ``hydra``), as the job will see it."""
    if cfg is None:
        return None
    task = copy.deepcopy(cfg)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def _launch(sweeper: Any, composer: Composer, master: DictConfig, todo: list[SweepPoint], job: Any,
            known: dict[int, PointOutcome]) -> list[Any]:
    """Launch ``todo`` in batches of ``max_batch_size``; fill ``known`` from each ``JobReturn``."""
    launcher, real = sweeper.launcher, sweeper.hydra_context.config_loader
    returns = []
    size = sweeper.max_batch_size or len(todo) or 1
    for first in range(0, len(todo), size):
        batch = todo[first : first + size]
        concurrency = launcher_concurrency(master.hydra.get("launcher"), len(batch))
        planned = {}
        for p in batch:  # the name is percent-quoted: no quote can end the string
            p.runtime = [f"++hydra.job.env_set.{POINT_ENV}={p.index}",
                         f"++hydra.job.env_set.{CONCURRENCY_ENV}={concurrency}",
                         *([f"hydra.sweep.subdir='{p.name}'"] if p.name else [])]
            planned[(*p.overrides, *p.runtime)] = composer.add(p.config, p.runtime)
        launcher.hydra_context = HydraContext(PlannedLoader(real, planned), sweeper.hydra_context.callbacks)
        try:
            results = launcher.launch([[*p.overrides, *p.runtime] for p in batch], initial_job_idx=first)
        except Exception as exc:  # a crashed launcher loses returns, not the files jobs wrote
            log.error("the launcher failed: %s", exc)
            for p in batch:
                known[p.index] = PointOutcome(job(p, concurrency), "failed", [f"the launcher failed: {one_line(exc)}"])
            continue
        finally:
            launcher.hydra_context = sweeper.hydra_context
        returns.append(results)
        for p, ret in zip(batch, results, strict=True):
            known[p.index] = outcome_of(ret, job(p, concurrency))
    return returns


def outcome_of(ret: JobReturn, job: JobInfo) -> PointOutcome:
    """A point's outcome from its ``JobReturn``: the app's own outcome, ok for any other value, or the
    exception the job raised as one line."""
    if ret.status == JobStatus.COMPLETED:
        value = ret.return_value
        return value if isinstance(value, PointOutcome) else PointOutcome(job, "ok")
    return PointOutcome(job, "failed", [one_line(ret._return_value)])


def finish(outcomes: list[PointOutcome], skipped: int = 0) -> None:
    """Log one line per point; raise :class:`SweepError`, listing every failed point, if any failed."""
    for o in outcomes:
        log.info("#%d %s [%s]: %s", o.job.job_num, o.label, o.status, o.summary)
    failed = [o for o in outcomes if o.status == "failed"]
    note = f" ({skipped} already complete)" if skipped else ""
    if not failed:
        log.info("all %d point(s) ok%s", len(outcomes), note)
        return
    listing = "\n".join(f"  #{o.job.job_num} {o.label} ({o.job.output_dir}): {'; '.join(o.errors)}" for o in failed)
    raise SweepError(f"{len(failed)} of {len(outcomes)} point(s) failed{note}:\n{listing}")
