"""The sweep behind the ``infer`` Hydra sweeper (``hydra_plugins/infer_sweep``), usable by any Hydra app.

1. Expand the overrides into points (a point listed twice runs once) and compose each once
   (:mod:`~experiments.framework.plan`).
2. If the app registered its hooks (:func:`~experiments.framework.hooks.register`: a
   :class:`~experiments.framework.point.PointApp`), check every point before any runs, and skip the points
   already complete with the same config.
3. Hold the sweep folder's lock, launch the rest (:mod:`~experiments.framework.launch`).
4. Log one line per point, and fail listing every point that failed or did not run. Ctrl-C stops
   with one line saying what is complete and how to resume (exit 130). An app without hooks or
   ``sweep.*`` settings gets Hydra's folders and defaults.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf

from experiments.framework import store
from experiments.framework.bench import one_line
from experiments.framework.hooks import hooks_of
from experiments.framework.job import JobInfo, PointOutcome
from experiments.framework.launch import folder_of, launch_passes, usable
from experiments.framework.lock import SweepLock, SweepLocked
from experiments.framework.plan import RUN_CONTROL, Composer, expand, point_dir_name
from experiments.framework.spec import ConfigError, require_plain_name
from experiments.framework.validate import composition_error
from infer_core.measure.files import write_text_atomic

log = logging.getLogger(__name__)


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


def settings(master: DictConfig) -> tuple[bool, bool, int]:
    """``(sweep.resume, sweep.skip_invalid, sweep.rounds)``, defaults ``(True, False, 1)`` for apps without them;
    a ``sweep.rounds`` below 1 is refused, and a ``sweep.name``
    that would lead the sweep's folder out of its parent is refused (an explicit ``hydra.sweep.dir`` is the
    user's own choice)."""
    node = master.get("sweep")
    node = node if isinstance(node, DictConfig) else {}
    explicit = any(o.lstrip("+").split("=", 1)[0] == "hydra.sweep.dir" for o in master.hydra.overrides.hydra)
    if "name" in node and not explicit:
        try:
            require_plain_name("sweep.name", node.get("name"), "the sweep's folder under outputs/sweeps/")
        except ConfigError as exc:
            raise SweepError(str(exc)) from None
    rounds = node.get("rounds", 1)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise SweepError(f"sweep.rounds={rounds} must be an integer >= 1")
    return bool(node.get("resume", True)), bool(node.get("skip_invalid", False)), rounds


def plan_points(sweeper: Any, arguments: list[str], hooks: Any, sweep_dir: Path) -> tuple[list[SweepPoint], Composer]:
    """Expand, deduplicate, compose and check every point."""
    loader = sweeper.hydra_context.config_loader
    combos = expand(OverridesParser.create(config_loader=loader).parse_overrides(
        sweeper._parse_config() + list(arguments)))
    unique = list(dict.fromkeys(tuple(c) for c in combos))
    if len(unique) < len(combos):
        log.warning("%d point(s) listed more than once: each runs once", len(combos) - len(unique))
    composer = Composer(loader, sweeper.config)
    points = [SweepPoint(i, list(o)) for i, o in enumerate(unique)]
    for p in points:
        p.name = point_dir_name(p.overrides) if sweeper.subdir_from_overrides else None
        try:
            p.config = composer.compose(p.overrides)
        except Exception as exc:  # a composition error makes the point invalid
            p.error = composition_error(exc, lambda o=p.overrides: composer.knobs(o))
            continue
        if hooks is not None and p.name is not None:
            p.error = hooks.check(p.config, sweep_dir / p.name) or ""
    if hooks is not None and hasattr(hooks, "same_as"):
        points = _distinct(points, hooks, sweep_dir)
    return points, composer


def _distinct(points: list[SweepPoint], hooks: Any, sweep_dir: Path) -> list[SweepPoint]:
    """Points written differently that are the same point (``kv.seq_len=10,010``) run once, as the first."""
    seen: dict[str, SweepPoint] = {}
    kept = []
    for p in points:
        key = None if p.error or p.name is None else hooks.same_as(sweep_dir / p.name)
        if key is not None and key in seen:
            log.warning("%s is the same point as %s: it runs once", " ".join(p.overrides),
                        " ".join(seen[key].overrides))
            hooks.forget(sweep_dir / p.name)
            continue
        if key is not None:
            seen[key] = p
        kept.append(p)
    for i, p in enumerate(kept):
        p.index = i
    return kept


def run_sweep(sweeper: Any, arguments: list[str]) -> list[Any]:
    """The whole sweep (see the module docstring); returns the launcher's batches of ``JobReturn``."""
    master: DictConfig = sweeper.config
    resume, skip_invalid, rounds = settings(master)
    hooks = hooks_of(sweeper.task_function)
    if hooks is None:
        log.info("no sweep hooks registered for this app (experiments.framework.hooks.register): points are not "
                 "checked before running, and complete ones are not skipped")
    sweep_dir = Path(master.hydra.sweep.dir).absolute()
    start = time.perf_counter()
    points, composer = plan_points(sweeper, arguments, hooks, sweep_dir)
    invalid = [p for p in points if p.error]
    log.info("checked %d point(s) in %.2f s: %d valid, %d invalid", len(points), time.perf_counter() - start,
             len(points) - len(invalid), len(invalid))
    if invalid and not (skip_invalid and hooks is not None):
        listing = "\n".join(f"  #{p.index} {' '.join(p.overrides)}: {p.error}" for p in invalid)
        hint = " (sweep.skip_invalid=true runs the valid ones)" if hooks is not None else ""
        raise SweepError(f"{len(invalid)} of {len(points)} sweep point(s) are invalid, nothing was run{hint}:\n"
                         f"{listing}")
    problem = usable(sweep_dir)
    if problem:
        raise SweepError(problem)
    try:
        with SweepLock(sweep_dir):
            return _run(sweeper, composer, points, hooks, sweep_dir, resume, rounds)
    except SweepLocked as exc:
        raise SweepError(str(exc)) from None
    except OSError as exc:  # the lock or multirun.yaml on a full or read-only disk (points write their own errors)
        raise SweepError(f"could not write the sweep's files in {sweep_dir}: {one_line(exc)}") from None


def _run(sweeper: Any, composer: Composer, points: list[SweepPoint], hooks: Any, sweep_dir: Path,
         resume: bool, rounds: int) -> list[Any]:
    write_text_atomic(sweep_dir / "multirun.yaml", OmegaConf.to_yaml(sweeper.config))

    def job(p: SweepPoint, concurrency: int = 1, pass_num: int = 0) -> JobInfo:
        shown = tuple(o for o in p.overrides if not o.startswith(RUN_CONTROL))
        return JobInfo(folder_of(sweep_dir, p.name, p.index), shown, p.index, sweep_dir.name, concurrency,
                       pass_num=pass_num, passes=rounds)

    known: dict[int, PointOutcome] = {p.index: hooks.record_invalid(job(p), p.config, p.error)
                                      for p in points if p.error}
    todo, skipped = [], 0
    for p in (p for p in points if not p.error):
        done = hooks.completed(job(p)) if hooks is not None and resume and p.name is not None else None
        if done is not None:
            known[p.index], skipped = done, skipped + 1
        else:
            todo.append(p)
    if skipped:
        log.info("skipping %d complete point(s) already in %s (sweep.resume=false recomputes them)", skipped,
                 sweep_dir)
    try:
        returns = launch_passes(sweeper, composer, todo, job, known, hooks if resume else None, rounds)
    except KeyboardInterrupt:
        complete = sum(store.read_manifest(job(p).output_dir) is not None for p in points if p.name)
        print(f"interrupted: {complete} of {len(points)} point(s) complete in {sweep_dir}; run the same command "
              "again to finish the rest (complete points are skipped)", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    finish([known[p.index] for p in points], skipped)
    return returns


def finish(outcomes: list[PointOutcome], skipped: int = 0) -> None:
    """Log one line per point; raise :class:`SweepError`, listing every point not ok, if any."""
    for o in outcomes:
        log.info("#%d %s [%s]: %s", o.job.job_num, o.label, o.status, o.summary)
    failed = [o for o in outcomes if o.status != "ok"]
    note = f" ({skipped} already complete)" if skipped else ""
    if not failed:
        log.info("all %d point(s) ok%s", len(outcomes), note)
        return
    listing = "\n".join(f"  #{o.job.job_num} {o.label} ({o.job.output_dir}) [{o.status}]: {'; '.join(o.errors)}"
                        for o in failed)
    raise SweepError(f"{len(failed)} of {len(outcomes)} point(s) failed or did not run{note}:\n{listing}")
