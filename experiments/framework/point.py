"""One sweep point: validate its config once, run its experiment, write its files and manifest.

Hydra-free apart from OmegaConf: ``run.py`` gives each job its folder and identity, and the
sweeper asks :class:`PointApp` to check points before running and to recognise complete ones.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig
from threadpoolctl import threadpool_limits

from experiments.framework import store
from experiments.framework.bench import one_line
from experiments.framework.isolate import run_isolated
from experiments.framework.spec import ConfigError, Experiment, VariantResult, resolve_paths
from experiments.framework.validate import Point, config_hash, raw_config, validate
from infer_core.measure import environment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobInfo:
    """Where a point writes and how its rows identify it (runtime facts, not config)."""

    output_dir: Path
    overrides: tuple[str, ...] = ()
    job_num: int = 0
    run_id: str = ""
    concurrency: int = 1
    cwd: Path | None = None  # where the command was started: relative project paths resolve against it
    progress: str = ""  # "k/N/start" from the sweeper: the k-th of N points run, the launch began at start

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


@dataclass
class PointApp:
    """Runs points for an app that registers ``experiments``; the ``infer`` sweeper's hooks.

    ``validated`` keeps the points the sweeper checked in this process, by folder, so a job the
    basic launcher runs here is not validated again (a job in another process validates its own).
    """

    experiments: Mapping[str, Experiment]
    repo: Path  # the checkout whose git state goes into every row
    validated: dict[Path, Point] = field(default_factory=dict)
    ran: list[PointOutcome] = field(default_factory=list)  # outcomes of the jobs run in this process

    def check(self, cfg: DictConfig, folder: Path) -> str | None:
        """None when the point is valid (and remembered for its job), else the error in one line."""
        try:
            self.validated[folder.absolute()] = validate(cfg, self.experiments)
        except ConfigError as exc:
            return str(exc)
        return None

    def same_as(self, folder: Path) -> str | None:
        """The identity (``config_hash``) of the point checked for ``folder``: equal for the same point however
        its overrides were written."""
        point = self.validated.get(folder.absolute())
        return point.config_hash if point else None

    def forget(self, folder: Path) -> None:
        """Drop a checked point that will not run (a duplicate of another)."""
        self.validated.pop(folder.absolute(), None)

    def completed(self, job: JobInfo) -> PointOutcome | None:
        """The outcome of a point already complete in its folder with the same effective config; None
        (the point runs again) when it is missing, partial, failed, or its config changed since."""
        manifest = store.read_manifest(job.output_dir)
        point = self.validated.get(job.output_dir.absolute())
        if manifest is None or manifest.get("status") != "ok" or point is None:
            return None
        if manifest.get("config_hash") != point.config_hash:
            before, now = manifest.get("config", {}), point.flat_config()
            changed = [f"{k}: {before.get(k)} -> {now.get(k)}" for k in sorted({*before, *now})
                       if before.get(k) != now.get(k)]
            log.info("%s: its effective config changed since it ran (%s): running it again", job.output_dir.name,
                     "; ".join(changed) or "config_hash differs")
            return None
        return PointOutcome(job, "ok", [], str(manifest.get("summary", "")))

    def run(self, cfg: DictConfig, job: JobInfo) -> PointOutcome:
        """Validate (unless the sweeper did) and run one point; nothing raised escapes: a bad config or
        an exception becomes a ``status=failed`` row with a one-line error (the traceback goes to the log)."""
        log.info("%sjob %d: %s", f"{job.position()} " if job.progress else "", job.job_num,
                 " ".join(job.overrides) or "(defaults)")
        point: Point | None = self.validated.pop(job.output_dir.absolute(), None)
        env: environment.Environment | None = None
        store.clear_manifest(job.output_dir)  # from here until the new manifest, the point is not complete
        try:
            point = point or validate(cfg, self.experiments)
            bench, knobs = point.bench, point.knobs
            if job.cwd is not None:  # relative project paths: from where the command started, not the job's folder
                knobs = resolve_paths(knobs, job.cwd)
                if not Path(bench.machine_file).is_absolute():
                    bench = dataclasses.replace(bench, machine_file=str(job.cwd / bench.machine_file))
            with threadpool_limits(limits=blas_threads(bench.threads, job.concurrency), user_api="blas"):
                env = environment.capture(self.repo, job.concurrency)
                exp = point.experiment
                results = run_isolated(exp.run, knobs, bench, point.seed) if exp.isolated else \
                    exp.run(knobs, bench, point.seed)
        except Exception as exc:
            if not isinstance(exc, ConfigError):
                log.error("job %d failed:\n%s", job.job_num, traceback.format_exc())
            results = [VariantResult("", status="failed", error=one_line(exc))]
        self.ran.append(self._write(job, cfg, point, results, env))
        return self.ran[-1]

    def record_invalid(self, job: JobInfo, cfg: DictConfig | None, error: str) -> PointOutcome:
        """Write the failed row of a point that did not validate (or compose) and was not run."""
        return self._write(job, cfg, None, [VariantResult("", status="failed", error=error)], None)

    def _write(self, job: JobInfo, cfg: DictConfig | None, point: Point | None, results: list[VariantResult],
               env: environment.Environment | None) -> PointOutcome:
        exp = point.experiment if point else self.experiments.get(cfg.get("experiment") if cfg else None)
        name = exp.name if exp else str(cfg.get("experiment", "") if cfg else "")
        flat = point.flat_config() if point else raw_config(cfg)
        identity = {"schema_version": store.SCHEMA_VERSION, "experiment": name, "run_id": job.run_id,
                    "job_num": job.job_num, "overrides": " ".join(job.overrides),
                    "config_hash": config_hash(flat, name)}
        env = env or environment.capture(self.repo, job.concurrency)
        declared = [c.name for c in exp.columns] if exp else []
        outcome = summarize(job, results, exp)
        try:
            files = store.write_point(job.output_dir, identity, flat, results, dataclasses.asdict(env), declared)
            store.write_manifest(job.output_dir, {**identity, "status": outcome.status, "errors": outcome.errors,
                                                  "summary": outcome.summary, "files": files, "config": flat})
        except OSError as exc:  # a full disk, a read-only folder: the point is not complete, and says so
            error = f"could not write the point's files in {job.output_dir}: {one_line(exc)}"
            outcome = PointOutcome(job, "failed", [error], error)
        log.log(logging.WARNING if outcome.errors else logging.INFO, "job %d %s: %s", job.job_num, outcome.status,
                outcome.summary)
        return outcome


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
