"""The sweep logic behind the ``infer`` Hydra sweeper (``hydra_plugins/infer_sweep``).

Before any job runs, every point of the sweep is composed and validated: the config tree is
composed once per distinct choice of config groups, value-only overrides are applied to a copy,
and the experiment's schema checks them. Invalid points are listed and nothing runs (or, with
``sweep.skip_invalid=true``, they get a failed row and the rest runs). Each point's folder is
named after its overrides, so re-running the same sweep finds the complete points and skips
them (``sweep.resume``). After the launcher returns, the outcome of every point is read back from
its ``results.csv``, whatever launcher ran it, and every failure is listed.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from experiments.base import ConfigError
from experiments.runner import JobInfo, PointOutcome, read_outcome, record_invalid, validate
from infer_core.files import write_text_atomic

log = logging.getLogger(__name__)

#: Overrides that steer the sweep itself: left out of folder names and result identity.
RUN_CONTROL = ("sweep.",)
MAX_DIR_NAME = 120


@dataclass
class SweepPoint:
    """One point: its override strings, and how to build its config quickly."""

    index: int
    overrides: list[str]  # "key=value" as Hydra would print them, command-line order
    structural: tuple[str, ...]  # group choices, +/~ and hydra.* overrides: need a real composition
    values: list[tuple[str, Any]]  # (key, parsed value) to set on the composed config
    name: str = ""  # folder name under the sweep dir
    error: str = ""
    config: DictConfig | None = None


def point_dir_name(overrides: list[str]) -> str:
    """A folder name derived from a point's overrides, stable across runs and safe for any value.

    Each ``key=value`` is percent-quoted (so ``/`` cannot make sub-folders), run-control and
    ``hydra.*`` overrides are left out, and long names keep a prefix plus a hash of the whole.
    """
    kept = [o for o in overrides if not o.startswith(("hydra.", "hydra/", *RUN_CONTROL))]
    name = ",".join(quote(o, safe="=+-._@:[]") for o in kept) or "defaults"
    if len(name) > MAX_DIR_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:12]
        name = f"{name[: MAX_DIR_NAME - 13]}-{digest}"
    return name


def _is_structural(o: Override, groups: set[str]) -> bool:
    key = o.key_or_group
    return (o.is_add() or o.is_delete() or o.is_force_add() or o.package is not None or key in groups
            or "/" in key or key.startswith("hydra"))


def expand(overrides: list[Override], groups: set[str]) -> list[SweepPoint]:
    """The cartesian product of the sweep overrides, as points, in Hydra's order.

    As in Hydra's basic sweeper, a later override of the same key replaces an earlier one, so a
    command-line value wins over a preset's ``hydra.sweeper.params``.
    """
    last: dict[str, Override] = {}
    for o in overrides:
        last[o.get_key_element()] = o
    axes = []
    for o in last.values():
        key = o.get_key_element()
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                raise HydraException(f"the infer sweeper does not support the sweep {o.input_line}")
            strings = [f"{key}={v}" for v in o.sweep_string_iterator()]
            values = list(o.sweep_iterator())
        else:
            strings, values = [f"{key}={o.get_value_element_as_str()}"], [o.value()]
        structural = _is_structural(o, groups)
        axes.append([(s, structural, o.key_or_group, v) for s, v in zip(strings, values, strict=True)])
    points = []
    for i, combo in enumerate(itertools.product(*axes)):
        points.append(SweepPoint(
            index=i,
            overrides=[s for s, *_ in combo],
            structural=tuple(s for s, structural, *_ in combo if structural),
            values=[(key, value) for _, structural, key, value in combo if not structural],
        ))
    return points


class _Composer:
    """Composes the config tree once per distinct set of structural overrides."""

    def __init__(self, config_loader: Any, master: DictConfig) -> None:
        self.config_loader, self.master = config_loader, master
        self.cache: dict[tuple[str, ...], DictConfig | str] = {}

    def task_config(self, structural: tuple[str, ...]) -> DictConfig | str:
        """The composed task config (no ``hydra`` node), or the composition error as a message."""
        if structural not in self.cache:
            try:
                cfg = self.config_loader.load_sweep_config(self.master, list(structural))
                with open_dict(cfg):
                    del cfg["hydra"]
                OmegaConf.set_struct(cfg, True)
                self.cache[structural] = cfg
            except Exception as exc:  # any composition failure makes the point invalid
                self.cache[structural] = " ".join(str(exc).split("Config search path:")[0].split())
        return self.cache[structural]


def check_points(points: list[SweepPoint], composer: _Composer) -> None:
    """Fill ``error`` (and ``config``) of every point: composition, value overrides, schema."""
    for p in points:
        base = composer.task_config(p.structural)
        if isinstance(base, str):
            p.error = base
            continue
        cfg = copy.deepcopy(base)
        try:
            for key, value in p.values:
                OmegaConf.update(cfg, key, value, merge=True)
        except OmegaConfBaseException as exc:
            p.error = f"could not override {key}: {str(exc).splitlines()[0]}"
            continue
        p.config = cfg
        try:
            validate(cfg)
        except ConfigError as exc:
            p.error = str(exc)


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
    """The whole sweep: validate, skip what is complete, launch the rest, report every failure."""
    master: DictConfig = sweeper.config
    settings = master.sweep
    sweep_dir = Path(master.hydra.sweep.dir)
    parser = OverridesParser.create(config_loader=sweeper.hydra_context.config_loader)
    groups = set(master.hydra.runtime.choices.keys())
    start = time.perf_counter()
    points = expand(parser.parse_overrides(sweeper._parse_config() + list(arguments)), groups)
    check_points(points, _Composer(sweeper.hydra_context.config_loader, master))
    for p in points:
        p.name = point_dir_name(p.overrides)
    invalid = [p for p in points if p.error]
    log.info("checked %d point(s) in %.2f s: %d valid, %d invalid", len(points), time.perf_counter() - start,
             len(points) - len(invalid), len(invalid))
    if invalid and not settings.skip_invalid:
        listing = "\n".join(f"  #{p.index} {' '.join(p.overrides)}: {p.error}" for p in invalid)
        stop(f"{len(invalid)} of {len(points)} sweep point(s) are invalid, nothing was run "
             f"(sweep.skip_invalid=true runs the valid ones):\n{listing}")

    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(sweep_dir / "multirun.yaml", OmegaConf.to_yaml(master))
    run_id = sweep_dir.name

    def job(p: SweepPoint, concurrency: int = 1) -> JobInfo:
        shown = tuple(o for o in p.overrides if not o.startswith(RUN_CONTROL))
        return JobInfo(sweep_dir / p.name, shown, p.index, run_id, concurrency)

    known: dict[int, PointOutcome] = {}  # outcomes settled before launching: invalid or already complete
    for p in invalid:
        experiment = str(p.config.get("experiment", "")) if p.config is not None else ""
        known[p.index] = record_invalid(job(p), p.config, experiment, p.error)

    todo, done = [], []
    for p in points:
        if p.error:
            continue
        previous = read_outcome(job(p)) if settings.resume else None
        if previous is not None and previous.status == "ok":
            known[p.index] = previous
            done.append(p)
        else:
            todo.append(p)
    if done:
        log.info("skipping %d complete point(s) already in %s (sweep.resume=false recomputes them)", len(done),
                 sweep_dir)

    returns, launch_errors = [], []
    size = sweeper.max_batch_size or len(todo) or 1
    for first in range(0, len(todo), size):
        batch = todo[first : first + size]
        concurrency = launcher_concurrency(master.hydra.get("launcher"), len(batch))
        job_overrides = [[*p.overrides, f"hydra.sweep.subdir='{p.name}'", f"sweep.concurrency={concurrency}"]
                         for p in batch]  # the name is percent-quoted: no quote can end the string
        try:
            returns.append(sweeper.launcher.launch(job_overrides, initial_job_idx=first))
        except Exception as exc:  # a crashed launcher loses returns, not written files
            log.error("the launcher failed: %s", exc)
            launch_errors.append(" ".join(str(exc).split()))

    outcomes = [known.get(p.index) or outcome_of(job(p), launch_errors) for p in points]
    finish(outcomes, skipped=len(done))
    return returns


def outcome_of(job: JobInfo, launch_errors: list[str]) -> PointOutcome:
    """What the point's folder says, or a failure saying that it wrote nothing."""
    outcome = read_outcome(job)
    if outcome is not None:
        return outcome
    why = f"the launcher failed: {launch_errors[0]}" if launch_errors else "the job ended without writing it"
    return PointOutcome(job, "failed", [f"no results.csv ({why})"], "")


def finish(outcomes: list[PointOutcome], skipped: int = 0) -> None:
    """Log one line per point; raise, listing every failed point, if any failed."""
    for o in outcomes:
        log.info("#%d %s [%s]: %s", o.job.job_num, o.label, o.status, o.summary)
    failed = [o for o in outcomes if o.status == "failed"]
    note = f" ({skipped} already complete)" if skipped else ""
    if not failed:
        log.info("all %d point(s) ok%s", len(outcomes), note)
        return
    listing = "\n".join(f"  #{o.job.job_num} {o.label} ({o.job.output_dir}): {'; '.join(o.errors)}" for o in failed)
    stop(f"{len(failed)} of {len(outcomes)} point(s) failed{note}:\n{listing}")


def stop(message: str) -> None:
    """End the command with ``message`` on stderr and exit code 1, without a traceback."""
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(1)
