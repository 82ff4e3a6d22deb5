"""One sweep point: validate its config once, run its experiment, write its files and manifest.

Hydra-free apart from OmegaConf: ``run.py`` gives each job its folder and identity, and the
sweeper asks :class:`PointApp` to check points before running and to recognise complete ones.
"""

from __future__ import annotations

import dataclasses
import logging
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig
from threadpoolctl import threadpool_limits

from experiments.framework import passes, store
from experiments.framework.bench import one_line
from experiments.framework.isolate import run_isolated
from experiments.framework.job import JobInfo, PointOutcome, blas_threads, summarize
from experiments.framework.spec import ConfigError, Experiment, VariantResult, resolve_paths
from experiments.framework.validate import Point, config_hash, raw_config, validate
from infer_core.measure import environment
from infer_core.measure.canary import read_canary

log = logging.getLogger(__name__)


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
        """The outcome of a point already complete in its folder with the same effective config and at least
        ``job.passes`` passes; None (the point runs again) when it is missing, partial, failed, or changed since."""
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
        if int(manifest.get("passes", 1)) < max(1, job.passes):
            log.info("%s: measured in %s pass(es), sweep.rounds=%d asks for more: running it again",
                     job.output_dir.name, manifest.get("passes", 1), job.passes)
            return None
        return PointOutcome(job, "ok", [], str(manifest.get("summary", "")))

    def passes_done(self, job: JobInfo) -> int:
        """How many passes of an incomplete point its folder holds for the same config (resumed after them)."""
        point = self.validated.get(job.output_dir.absolute())
        return len(passes.read_record(job.output_dir, point.config_hash)) if point else 0

    def run(self, cfg: DictConfig, job: JobInfo) -> PointOutcome:
        """Validate (unless the sweeper did) and run one pass of a point (a single run: each of ``sweep.rounds``
        passes in turn); nothing raised escapes: a bad config or an exception becomes a ``status=failed`` row with
        a one-line error (the traceback goes to the log)."""
        rounds = job.passes or int((cfg.get("sweep") or {}).get("rounds", 1) or 1)
        for number in [job.pass_num] if job.pass_num else range(1, rounds + 1):
            outcome = self._run_pass(cfg, dataclasses.replace(job, pass_num=number, passes=rounds))
            if outcome.status != "ok":
                break
        self.ran.append(outcome)
        return outcome

    def _run_pass(self, cfg: DictConfig, job: JobInfo) -> PointOutcome:
        of = f" (pass {job.pass_num} of {job.passes})" if job.passes > 1 else ""
        log.info("%sjob %d%s: %s", f"{job.position()} " if job.progress else "", job.job_num, of,
                 " ".join(job.overrides) or "(defaults)")
        point: Point | None = self.validated.get(job.output_dir.absolute())
        env: environment.Environment | None = None
        carry, canary, earlier, counts = passes.Carry(), None, [], {}
        store.clear_manifest(job.output_dir)  # from here until the new manifest, the point is not complete
        try:
            point = point or validate(cfg, self.experiments)
            bench, knobs, exp = point.bench, point.knobs, point.experiment
            if job.cwd is not None:  # relative project paths: from where the command started, not the job's folder
                knobs = resolve_paths(knobs, job.cwd)
                if not Path(bench.machine_file).is_absolute():
                    bench = dataclasses.replace(bench, machine_file=str(job.cwd / bench.machine_file))
            earlier = passes.read_record(job.output_dir, point.config_hash)[: job.pass_num - 1]
            if len(earlier) < job.pass_num - 1:
                raise RuntimeError(f"pass {job.pass_num} of {job.passes} cannot run: its folder holds "
                                   f"{len(earlier)} earlier pass(es) of this config ({passes.PASSES})")
            prior, counts = passes.prior_of(earlier)
            carry = passes.Carry(prior)
            with threadpool_limits(limits=blas_threads(bench.threads, job.concurrency), user_api="blas"):
                env = environment.capture(self.repo, job.concurrency)
                canary = read_canary() if exp.timed else None
                results, carry = run_isolated(passes.run_pass, exp.run, carry, knobs, bench, point.seed) \
                    if exp.isolated else passes.run_pass(exp.run, carry, knobs, bench, point.seed)
            if problem := passes.check_calls(carry, job.pass_num):
                results = [VariantResult("", status="failed", error=problem)]
        except Exception as exc:
            if not isinstance(exc, ConfigError):
                log.error("job %d failed:\n%s", job.job_num, traceback.format_exc())
            results = [VariantResult("", status="failed", error=one_line(exc))]
        outcome = summarize(job, results, point.experiment if point else None)
        if point is None or outcome.status != "ok" or job.pass_num >= job.passes:
            labels = passes.pass_labels(results, carry, counts, job.pass_num)
            return self._write(job, cfg, point, results, env, labels, passes.canaries(earlier, job.pass_num, canary))
        try:  # an earlier pass: its samples and canary kept for the next, the point not complete yet
            passes.write_record(job.output_dir, point.config_hash, earlier, job.pass_num, carry, canary)
        except OSError as exc:
            error = f"could not write the point's files in {job.output_dir}: {one_line(exc)}"
            return PointOutcome(job, "failed", [error], error)
        log.info("job %d pass %d of %d done: %s", job.job_num, job.pass_num, job.passes, outcome.summary)
        return PointOutcome(job, "ok", [], f"pass {job.pass_num} of {job.passes}: {outcome.summary}")

    def record_invalid(self, job: JobInfo, cfg: DictConfig | None, error: str) -> PointOutcome:
        """Write the failed row of a point that did not validate (or compose) and was not run."""
        return self._write(job, cfg, None, [VariantResult("", status="failed", error=error)], None)

    def _write(self, job: JobInfo, cfg: DictConfig | None, point: Point | None, results: list[VariantResult],
               env: environment.Environment | None, pass_of: dict | None = None,
               canary: list[dict] | None = None) -> PointOutcome:
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
            files = store.write_point(job.output_dir, identity, flat, results, dataclasses.asdict(env), declared,
                                      pass_of or {}, canary or [])
            store.write_manifest(job.output_dir, {**identity, "status": outcome.status, "errors": outcome.errors,
                                                  "summary": outcome.summary, "files": files, "config": flat,
                                                  "passes": max(1, job.pass_num)})
            (job.output_dir / passes.PASSES).unlink(missing_ok=True)  # the files above hold every pass now
        except OSError as exc:  # a full disk, a read-only folder: the point is not complete, and says so
            error = f"could not write the point's files in {job.output_dir}: {one_line(exc)}"
            outcome = PointOutcome(job, "failed", [error], error)
        log.log(logging.WARNING if outcome.errors else logging.INFO, "job %d %s: %s", job.job_num, outcome.status,
                outcome.summary)
        return outcome
