"""One sweep point: validate the config, run its experiment, write its rows.

Hydra-free apart from OmegaConf, so tests can call :func:`run_point` directly;
``run.py`` supplies the job's folder and identity from Hydra.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from threadpoolctl import threadpool_limits

from experiments import registry
from experiments.base import BenchConfig, ConfigError, Experiment, VariantResult, one_line
from experiments.results import (
    ENVIRONMENT,
    IDENTITY,
    OUTCOME,
    RESULTS,
    SAMPLE_COLUMNS,
    SAMPLES,
    SCHEMA_VERSION,
    flatten,
    read_csv,
    write_csv,
    write_sidecar,
)
from infer_core import environment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobInfo:
    """Where a point writes and how its rows identify it."""

    output_dir: Path
    overrides: tuple[str, ...] = ()
    job_num: int = 0
    run_id: str = ""
    concurrency: int = 1


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


@dataclass(frozen=True)
class Point:
    """A validated point: its experiment, typed knobs, bench settings and seed."""

    experiment: Experiment
    knobs: Any
    bench: BenchConfig
    seed: int

    def flat_config(self) -> dict[str, Any]:
        return flatten(
            {
                "seed": self.seed,
                "bench": dataclasses.asdict(self.bench),
                self.experiment.key: dataclasses.asdict(self.knobs),
            }
        )


def _typed(schema: type, node: Any, key: str) -> Any:
    """Merge ``node`` into ``schema``, run its checks, and return the dataclass instance."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))
    except OmegaConfBaseException as exc:
        full_key = getattr(exc, "full_key", None)
        where = f"{key}.{full_key}" if full_key else key
        message = str(exc).splitlines()[0]
        raise ConfigError(f"{where}: {message}") from None


def validate(cfg: DictConfig) -> Point:
    """Check a composed config: types, cross-field rules and seed. Raises :class:`ConfigError`."""
    exp = registry.get(cfg.get("experiment"))
    if exp.key not in cfg:
        raise ConfigError(f"experiment={exp.name} needs its knobs under '{exp.key}'")
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed} must be a non-negative integer")
    knobs = _typed(exp.schema, cfg[exp.key], exp.key)
    bench = _typed(BenchConfig, cfg.get("bench", {}), "bench")
    return Point(exp, knobs, bench, seed)


def _raw_config(cfg: DictConfig) -> dict[str, Any]:
    """The config as composed (for rows of points that failed validation), seed and bench first."""
    try:
        tree = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        tree = OmegaConf.to_container(cfg, resolve=False)
    for run_control in ("experiment", "sweep", "hydra"):
        tree.pop(run_control, None)
    first = {k: tree.pop(k) for k in ("seed", "bench") if k in tree}
    return flatten({**first, **tree})


def blas_threads(requested: int | None, concurrency: int) -> int | None:
    """BLAS threads for a job: as requested, else the usable cores shared by the jobs running at once."""
    if requested is not None or concurrency <= 1:
        return requested
    return max(1, environment.usable_cpus() // concurrency)


def config_hash(flat: dict[str, Any], experiment: str) -> str:
    """A short, stable hash of the experiment name and its resolved config."""
    text = json.dumps({"experiment": experiment, **flat}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _identity(job: JobInfo, flat: dict[str, Any], experiment: str) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "experiment": experiment,
        "run_id": job.run_id,
        "job_num": job.job_num,
        "overrides": " ".join(job.overrides),
        "config_hash": config_hash(flat, experiment),
    }


def run_point(cfg: DictConfig, job: JobInfo) -> PointOutcome:
    """Validate and run one point, write ``results.csv`` and ``samples.csv`` into its folder.

    Nothing raised by the experiment escapes: a bad config or an exception becomes a
    ``status=failed`` row with a one-line error (the traceback goes to the job's log).
    """
    log.info("job %d: %s", job.job_num, " ".join(job.overrides) or "(defaults)")
    exp: Experiment | None = None
    flat: dict[str, Any] | None = None
    env: dict[str, Any] | None = None
    try:
        point = validate(cfg)
        exp, flat = point.experiment, point.flat_config()
        with threadpool_limits(limits=blas_threads(point.bench.threads, job.concurrency), user_api="blas"):
            env = environment.capture(job.concurrency)
            results = exp.run(point.knobs, point.bench, point.seed)
    except Exception as exc:
        if not isinstance(exc, ConfigError):
            log.error("job %d failed:\n%s", job.job_num, traceback.format_exc())
        results = [VariantResult("", status="failed", error=one_line(exc))]
    flat = flat if flat is not None else _raw_config(cfg)
    env = env if env is not None else environment.capture(job.concurrency)

    if exp is None:
        exp = registry.EXPERIMENTS.get(cfg.get("experiment"))
    name = exp.name if exp else str(cfg.get("experiment", ""))
    identity = _identity(job, flat, name)
    write_results(job.output_dir, identity, flat, results, env, exp)
    samples = [
        {**identity, "variant": r.variant, "measure": name, "sample": i, "inner_loops": t.inner_loops,
         "time_s": wall, "cpu_time_s": cpu}
        for r in results
        for name, t in r.timings.items()
        for i, (wall, cpu) in enumerate(zip(t.per_call_s, t.cpu_per_call_s, strict=True))
    ]
    write_csv(job.output_dir / SAMPLES, samples, SAMPLE_COLUMNS)
    for stem in dict.fromkeys(stem for r in results for stem in r.sidecars):
        write_sidecar(job.output_dir / f"{stem}.csv", identity, [(r.variant, r.sidecars[stem])
                                                               for r in results if stem in r.sidecars])

    outcome = summarize(job, results, exp)
    log.log(logging.WARNING if outcome.errors else logging.INFO, "job %d %s: %s", job.job_num, outcome.status,
            outcome.summary)
    return outcome


def write_results(output_dir: Path, identity: dict[str, Any], flat: dict[str, Any], results: list[VariantResult],
                  env: dict[str, Any], exp: Experiment | None) -> None:
    """``results.csv``: one row per variant, columns in the order of GUIDE §3, written atomically."""
    rows = [
        {**identity, "variant": r.variant, **flat, **r.metrics, **env, "status": r.status, "error": r.error}
        for r in results
    ]
    declared = list(exp.columns) if exp else []
    undeclared = [k for r in results for k in r.metrics if k not in declared]  # never drop a metric
    columns = [*IDENTITY, *flat, *declared, *dict.fromkeys(undeclared), *ENVIRONMENT, *OUTCOME]
    write_csv(output_dir / RESULTS, rows, columns)


def summarize(job: JobInfo, results: list[VariantResult], exp: Experiment | None) -> PointOutcome:
    """The point's status, its errors (one line each) and the experiment's one-line summary."""
    errors = [f"{r.variant}: {r.error}" if r.variant else r.error for r in results if r.status == "failed"]
    status = "failed" if errors else "ok"
    summary = exp.summary(results) if exp and not errors else "; ".join(errors)
    skipped = [r.variant for r in results if r.status == "skipped"]
    if skipped:
        summary += f" (skipped over budget: {', '.join(skipped)})"
    return PointOutcome(job, status, errors, summary)


def record_invalid(job: JobInfo, cfg: DictConfig | None, experiment: str, error: str) -> PointOutcome:
    """Write the failed row of a point that did not validate (or compose) and was not run."""
    flat = _raw_config(cfg) if cfg is not None else {}
    exp = registry.EXPERIMENTS.get(experiment)
    identity = _identity(job, flat, experiment)
    results = [VariantResult("", status="failed", error=error)]
    write_results(job.output_dir, identity, flat, results, environment.capture(job.concurrency), exp)
    return summarize(job, results, exp)


def read_outcome(job: JobInfo) -> PointOutcome | None:
    """The outcome recorded in a point's ``results.csv``; None when it is missing or unreadable.

    A point counts as complete (status ``ok``) when every row is ``ok`` or ``skipped``.
    """
    try:
        rows = read_csv(job.output_dir / RESULTS)
    except (OSError, csv.Error, UnicodeDecodeError):
        return None
    if not rows or any(r.get("status") not in ("ok", "skipped", "failed") for r in rows):
        return None
    results = [VariantResult(r["variant"], {k: _number(v) for k, v in r.items()}, r["status"], r.get("error", ""))
               for r in rows]
    try:
        return summarize(job, results, registry.EXPERIMENTS.get(rows[0].get("experiment")))
    except (KeyError, TypeError, ValueError):  # a summary needing a metric this file lacks
        return summarize(job, results, None)


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text
