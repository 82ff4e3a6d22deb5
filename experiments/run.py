"""The Hydra app: one job = one sweep point.

    python experiments/run.py kv.d_model=128 kv.n_heads=8      # one run
    python experiments/run.py -m kv.seq_len=10,100,500          # a sweep
    python experiments/run.py sweep=demo_kv                     # a preset sweep
    python experiments/run.py --help                            # every knob, its default and meaning

A sweep checks every point before running any (``experiments/framework/sweep.py``); a point that
fails at run time writes its rows with ``status=failed`` and the sweep goes on; the command then
exits non-zero and lists every failed point.
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
from omegaconf import DictConfig, OmegaConf

from experiments.framework.app import (
    HELP_ENV,
    command_line,
    guard_config_writes,
    help_text,
    job_info,
    register_schemas,
)
from experiments.framework.hooks import register
from experiments.framework.job import PointOutcome
from experiments.framework.point import PointApp
from experiments.registry import EXPERIMENTS

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

register_schemas(EXPERIMENTS)
guard_config_writes()
# Hydra fills its help template with string.Template: a literal "$" must be doubled.
OmegaConf.register_new_resolver("infer_help", lambda: help_text(
    EXPERIMENTS, CONF, "experiments/run.py", os.environ.get(HELP_ENV)).replace("$", "$$"), replace=True)
APP = PointApp(EXPERIMENTS, ROOT)


@hydra.main(version_base="1.3", config_path="../conf", config_name="infer_sweep")
def main(cfg: DictConfig) -> PointOutcome:
    return APP.run(cfg, job_info(HydraConfig.get()))


register(main, APP)  # the infer sweeper checks, resumes and collects outcomes through it


def exit_code(outcomes: list) -> int:
    """After the jobs this process ran: each failure's errors on stderr, and the exit code. (A sweep with
    failures has already ended with the sweeper's list of every failed point.)"""
    failed = [o for o in outcomes if o.status == "failed"]
    for o in failed:
        for err in o.errors:
            print(f"error: {err}", file=sys.stderr)
        print(f"(rows written to {o.job.output_dir})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    logging.raiseExceptions = False  # a full disk fails the point, once: not a logging traceback per line
    sys.argv = [sys.argv[0], *command_line(sys.argv[1:], EXPERIMENTS, CONF, "infer_sweep")]
    try:
        main()
    except KeyboardInterrupt:  # a single run (a sweep says what is complete itself)
        print("interrupted: the run did not finish; its folder holds no complete point (no point.json)",
              file=sys.stderr)
        sys.exit(130)
    sys.exit(exit_code(APP.ran))
