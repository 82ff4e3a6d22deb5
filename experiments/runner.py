"""One sweep point: validate the config, run its experiment, write its rows.

Hydra-free apart from OmegaConf, so tests can call :func:`run_point` directly;
``run.py`` supplies the job's folder and identity from Hydra.
"""

from __future__ import annotations

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
    tree.pop("experiment", None)
    first = {k: tree.pop(k) for k in ("seed", "bench") if k in tree}
    return flatten({**first, **tree})


def config_hash(flat: dict[str, Any], experiment: str) -> str:
    """A short, stable hash of the experiment name and its resolved config."""
    text = json.dumps({"experiment": experiment, **flat}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


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
        with threadpool_limits(limits=point.bench.threads, user_api="blas"):
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
    identity = {
        "schema_version": SCHEMA_VERSION,
        "experiment": name,
        "run_id": job.run_id,
        "job_num": job.job_num,
        "overrides": " ".join(job.overrides),
        "config_hash": config_hash(flat, name),
    }
    rows = [
        {**identity, "variant": r.variant, **flat, **r.metrics, **env, "status": r.status, "error": r.error}
        for r in results
    ]
    declared = list(exp.columns) if exp else []
    undeclared = [k for r in results for k in r.metrics if k not in declared]  # never drop a metric
    columns = [*IDENTITY, *flat, *declared, *dict.fromkeys(undeclared), *ENVIRONMENT, *OUTCOME]
    write_csv(job.output_dir / RESULTS, rows, columns)
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

    errors = [f"{r.variant}: {r.error}" if r.variant else r.error for r in results if r.status == "failed"]
    status = "failed" if errors else "ok"
    summary = exp.summary(results) if exp and not errors else "; ".join(errors)
    skipped = [r.variant for r in results if r.status == "skipped"]
    if skipped:
        summary += f" (skipped over budget: {', '.join(skipped)})"
    log.log(logging.WARNING if errors else logging.INFO, "job %d %s: %s", job.job_num, status, summary)
    return PointOutcome(job, status, errors, summary)
