"""The Hydra side of an app built on the framework: schemas in Hydra's config store, a job's identity,
the experiment inferred from the knobs, ``--help``. An app's task function is three lines::

    APP = PointApp(experiments, repo)
    def task(cfg): return APP.run(cfg, job_info(HydraConfig.get()))
    register(task, APP)  # experiments.framework.hooks: the ``infer`` sweeper checks and resumes through it
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra.core.utils as hydra_utils
from hydra.core.config_store import ConfigStore
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from experiments.framework.bench import BenchConfig, one_line
from experiments.framework.job import JobInfo
from experiments.framework.knobs import knob_help, show
from experiments.framework.launch import CONCURRENCY_ENV, PASS_ENV, POINT_ENV, PROGRESS_ENV
from experiments.framework.spec import Experiment, knob

#: A single run's folder: the second it started and its process id, so two runs started together never share one
#: (``conf/infer_sweep.yaml`` says the same).
RUN_DIR = "outputs/runs/${now:%Y-%m-%d_%H-%M-%S}_${pid:}"
OmegaConf.register_new_resolver("pid", os.getpid, replace=True)


@dataclass
class SweepSettings:
    """How a sweep runs (run control: never part of a result's identity)."""

    name: str = knob("${now:%Y-%m-%d_%H-%M-%S}", "the sweep's folder under outputs/sweeps/")
    resume: bool = knob(True, "skip the points already complete with the same effective config")
    skip_invalid: bool = knob(False, "run the valid points and record the invalid ones as failed rows")
    rounds: int = knob(1, "passes per point of a timed experiment, spread over the sweep (pass 1 of every point, "
                          "then pass 2 ...); its samples merged. Serve and batching are measured once")


class FolderWriteError(CompactHydraException):
    """A job's folder could not be written (a full or read-only disk): Hydra prints this one line alone."""


def guard_config_writes() -> None:
    """Make Hydra's first write of a job (its ``.hydra/`` configs) fail in one line naming the folder, instead of
    a traceback: on a full disk it is the first thing that fails."""
    save = hydra_utils._save_config
    if getattr(save, "guarded", False):
        return

    def guarded(cfg: Any, filename: str, output_dir: Path) -> None:
        try:
            save(cfg, filename, output_dir)
        except OSError as exc:
            raise FolderWriteError(f"could not write the run's files in {Path(output_dir).parent}: "
                                   f"{one_line(exc)}") from None

    guarded.guarded = True  # type: ignore[attr-defined]
    hydra_utils._save_config = guarded


def register_schemas(experiments: Mapping[str, Experiment]) -> None:
    """Put the schemas in Hydra's config store, for YAML to extend (``/schema/bench``, ``/schema/kv`` ...)."""
    cs = ConfigStore.instance()
    cs.store(group="schema", name="bench", node=BenchConfig)
    cs.store(group="schema", name="sweep_settings", node=SweepSettings)
    for exp in experiments.values():
        cs.store(group="schema", name=exp.key, node=exp.schema)


def job_info(hc: DictConfig) -> JobInfo:
    """The current job's folder and identity, from Hydra's runtime config; the sweeper's runtime facts
    (point number, concurrency) arrive in ``hydra.job.env_set``."""
    multirun = hc.mode == RunMode.MULTIRUN
    facts = hc.job.env_set if multirun else {}
    return JobInfo(
        output_dir=Path(hc.runtime.output_dir),
        # as typed: an override's ${...} is text here, resolved (and checked) with the knobs
        overrides=tuple(o for o in OmegaConf.to_container(hc.overrides.task, resolve=False)
                        if not o.startswith("sweep.")),
        job_num=int(facts.get(POINT_ENV, hc.job.num)) if multirun else 0,
        run_id=Path(hc.sweep.dir if multirun else hc.run.dir).name,
        concurrency=int(facts.get(CONCURRENCY_ENV, 1)),
        progress=str(facts.get(PROGRESS_ENV, "")),
        pass_num=int(str(facts.get(PASS_ENV, "0/0")).split("/")[0]),
        passes=int(str(facts.get(PASS_ENV, "0/0")).split("/")[1]),
        cwd=Path(hc.runtime.cwd),
    )


def infer_experiment(args: list[str], experiments: Mapping[str, Experiment], default: str | None) -> list[str]:
    """``args`` plus ``experiment=NAME`` when the overrides set knobs (``quant.bits``) or groups (``qmethod``)
    of exactly one experiment other than ``default``; unchanged when an experiment or preset is named."""
    keys = [a.split("=", 1)[0].lstrip("+~") for a in args if "=" in a and not a.startswith("-")]
    if any(k in ("experiment", "sweep") for k in keys):
        return args
    named = {e.name for e in experiments.values() for k in keys if k.split(".", 1)[0] == e.key or k in e.groups}
    if len(named) != 1 or named == {default}:
        return args
    exp = experiments[named.pop()]
    # its group files already choose its groups: `+qmethod=q4_k` (Hydra's hint for a new key) becomes `qmethod=q4_k`
    args = [a.lstrip("+") if a.lstrip("+").split("=", 1)[0] in exp.groups else a for a in args]
    first = next(i for i, a in enumerate(args) if "=" in a and not a.startswith("-"))  # overrides stay together
    return [*args[:first], f"experiment={exp.name}", *args[first:]]


def _flag(args: list[str], *names: str) -> str | None:
    """The value of a command-line flag given as ``--name value``, ``--name=value`` or ``-n value``."""
    for i, a in enumerate(args):
        for name in names:
            if a == name and i + 1 < len(args):
                return args[i + 1]
            if a.startswith(f"{name}="):
                return a.split("=", 1)[1]
    return None


def command_line(args: list[str], experiments: Mapping[str, Experiment], conf: Path, primary: str) -> list[str]:
    """The arguments as Hydra should get them: ``experiment=NAME`` added when the knobs set name one
    (whenever the primary config chooses an experiment from the group), and a re-run from a saved
    config (``--config-name config``) given the app's run folder instead of Hydra's default."""
    name = _flag(args, "--config-name", "-cn") or primary
    folder = Path(_flag(args, "--config-dir", "-cd") or conf)
    path = folder / f"{name}.yaml" if (folder / f"{name}.yaml").exists() else conf / f"{name}.yaml"
    defaults = OmegaConf.load(path).get("defaults", []) if path.exists() else []
    chosen = [str(e["experiment"]) for e in defaults if isinstance(e, DictConfig) and "experiment" in e]
    if chosen:
        args = infer_experiment(args, experiments, chosen[0])
    named = [a.split("=", 1)[1] for a in args if a.lstrip("+").startswith("experiment=")]
    if "--help" in args or "-h" in args:
        os.environ.pop(HELP_ENV, None)
        if named:
            os.environ[HELP_ENV] = named[0]
    if name != primary and not any(a.lstrip("+").startswith("hydra.run.dir=") for a in args):
        args = [*args, f"hydra.run.dir={RUN_DIR}"]
    return args


#: Set by :func:`command_line` when ``--help`` comes with an experiment named: the help shows only its knobs.
HELP_ENV = "INFER_SWEEP_HELP_EXPERIMENT"


def help_text(experiments: Mapping[str, Experiment], conf: Path, command: str, only: str | None = None) -> str:
    """``--help``: how to run, the config groups a user chooses from, then every knob with its default (of the
    experiment ``only`` and the shared ones, when it is given)."""
    groups = [f"  {g.name}: {', '.join(sorted(p.stem for p in g.glob('*.yaml')))}"
              for g in sorted(conf.iterdir()) if g.is_dir() and g.name != "hydra"]
    chosen = [e for e in experiments.values() if only in (None, e.name)] or list(experiments.values())
    knobs = knob_help([("bench", BenchConfig), ("sweep", SweepSettings), *((e.key, e.schema) for e in chosen)])
    if len(chosen) < len(experiments):
        knobs += f"(the knobs of experiment={chosen[0].name} and the shared ones; `--help` alone lists every " \
                 "experiment's)\n"
    return "\n".join([
        f"{command}: one job = one sweep point; a report turns sweeps into plots and tables.", "",
        f"  python {command} KEY=VALUE ...          one run  -> outputs/runs/<time>/",
        f"  python {command} -m KEY=A,B ...         a sweep  -> outputs/sweeps/<sweep.name>/<point>/",
        f"  python {command} sweep=NAME             a preset sweep (conf/sweep/)", "",
        "Config groups (GROUP=OPTION):", *groups, "",
        f"Knobs (key=default, then meaning). seed={show(0)}: the seed of numpy.random.default_rng for every "
        "random input.", "", knobs,
        "Hydra's own flags: --cfg job (the composed config), --info, --hydra-help.",
    ])
