"""The Hydra app: one job = one sweep point.

    python experiments/run.py kv.d_model=128 kv.n_heads=8      # one run
    python experiments/run.py -m kv.seq_len=10,100,500          # a sweep
    python experiments/run.py sweep=seed_kv                     # a preset sweep

Each job writes ``results.csv`` and ``samples.csv`` into its folder. A sweep checks every
point before running any (see experiments/sweeping.py); a point that fails at run time
writes its rows with ``status=failed`` and the sweep goes on; the command then exits
non-zero and lists every failed point.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from experiments import registry
from experiments.runner import JobInfo, PointOutcome, run_point

OUTCOMES: list[PointOutcome] = []  # filled by the jobs this process runs
CONF = Path(__file__).resolve().parents[1] / "conf"

registry.store_schemas()


def job_info(hc, cfg: DictConfig) -> JobInfo:
    """The current job's folder and identity, from Hydra's runtime config."""
    multirun = hc.mode == RunMode.MULTIRUN
    concurrency = cfg.get("sweep", {}).get("concurrency", 1) if multirun else 1
    return JobInfo(
        output_dir=Path(hc.runtime.output_dir),
        overrides=tuple(o for o in hc.overrides.task if not o.startswith("sweep.")),
        job_num=int(hc.job.num) if multirun else 0,
        run_id=Path(hc.sweep.dir if multirun else hc.run.dir).name,
        concurrency=int(concurrency),
    )


def with_inferred_experiment(argv: list[str]) -> list[str]:
    """Add ``experiment=NAME`` when the overrides set knobs of exactly one other experiment.

    ``run.py -m quant.bits=8,4`` then means the quantization experiment, as it reads. Nothing is
    added when an experiment, a sweep preset or another config (``--config-name``) is named.
    """
    args = argv[1:]
    if any(a.startswith(("-cn", "--config-name", "-cd", "--config-dir")) for a in args):
        return argv
    keys = [a.split("=", 1)[0].lstrip("+~") for a in args if "=" in a and not a.startswith("-")]
    if any(k in ("experiment", "sweep") for k in keys):
        return argv
    prefixes = {k.split(".", 1)[0] for k in keys}
    named = [e.name for e in registry.EXPERIMENTS.values() if e.key in prefixes]
    if len(named) != 1 or named[0] == default_experiment():
        return argv
    return [*argv, f"experiment={named[0]}"]


def default_experiment() -> str | None:
    """The experiment the primary config chooses when none is named."""
    for entry in OmegaConf.load(CONF / "infer_sweep.yaml").get("defaults", []):
        if isinstance(entry, DictConfig) and "experiment" in entry:
            return str(entry["experiment"])
    return None


@hydra.main(version_base="1.3", config_path="../conf", config_name="infer_sweep")
def main(cfg: DictConfig) -> None:
    OUTCOMES.append(run_point(cfg, job_info(HydraConfig.get(), cfg)))


def finish(outcomes: list[PointOutcome]) -> int:
    """After a single run: its error on stderr, and the exit code. (A sweep's summary and failure
    list come from the sweeper, which reads every point's folder, whatever launcher ran it.)"""
    failed = [o for o in outcomes if o.status == "failed"]
    for o in failed:
        for err in o.errors:
            print(f"error: {err}", file=sys.stderr)
        print(f"(rows written to {o.job.output_dir})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.argv = with_inferred_experiment(sys.argv)
    main()
    sys.exit(finish(OUTCOMES))
