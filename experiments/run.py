"""The Hydra app: one job = one sweep point.

    python experiments/run.py kv.d_model=128 kv.n_heads=8      # one run
    python experiments/run.py -m kv.seq_len=10,100,500          # a sweep
    python experiments/run.py sweep=seed_kv                     # a preset sweep

Each job writes ``results.csv`` and ``samples.csv`` into its folder. A failed point
writes its rows with ``status=failed`` and the sweep goes on; the command then exits
non-zero and lists every failed point.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from experiments import registry
from experiments.runner import JobInfo, PointOutcome, run_point

log = logging.getLogger("experiments.run")
OUTCOMES: list[PointOutcome] = []  # filled by the jobs this process runs

registry.store_schemas()


def job_info(hc) -> JobInfo:
    """The current job's folder and identity, from Hydra's runtime config."""
    multirun = hc.mode == RunMode.MULTIRUN
    n_jobs = hc.launcher.get("n_jobs", 1) if "launcher" in hc else 1
    return JobInfo(
        output_dir=Path(hc.runtime.output_dir),
        overrides=tuple(hc.overrides.task),
        job_num=int(hc.job.num) if multirun else 0,
        run_id=Path(hc.sweep.dir if multirun else hc.run.dir).name,
        concurrency=(os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs),
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    OUTCOMES.append(run_point(cfg, job_info(HydraConfig.get())))


def finish(outcomes: list[PointOutcome]) -> int:
    """Log one line per job, list every failed point on stderr; return the exit code."""
    if len(outcomes) > 1:
        for o in outcomes:
            log.info("#%d %s [%s]: %s", o.job.job_num, o.label, o.status, o.summary)
    failed = [o for o in outcomes if o.status == "failed"]
    if not failed:
        return 0
    if len(outcomes) == 1:
        for err in failed[0].errors:
            print(f"error: {err}", file=sys.stderr)
        print(f"(rows written to {failed[0].job.output_dir})", file=sys.stderr)
        return 1
    print(f"{len(failed)} of {len(outcomes)} point(s) failed:", file=sys.stderr)
    for o in failed:
        print(f"  #{o.job.job_num} {o.label} ({o.job.output_dir})", file=sys.stderr)
        for err in o.errors:
            print(f"    error: {err}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    main()
    sys.exit(finish(OUTCOMES))
