"""The framework on its own: a new experiment added from outside it, each point composed and validated
once, the layout's rules (module sizes, no experiment imported by the framework, no outside documents)."""

from __future__ import annotations

import ast
import csv
import time
from dataclasses import dataclass, fields
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.hydra import Hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from experiments.framework import plan, point
from experiments.framework.app import job_info, register_schemas
from experiments.framework.bench import BenchConfig, timing_columns
from experiments.framework.hooks import register
from experiments.framework.knobs import knobs
from experiments.framework.spec import Column, Experiment, Knobs, Report, VariantResult, knob
from experiments.registry import EXPERIMENTS
from experiments.reporting.gather import build_report
from tests.conftest import FAST_BENCH, ROOT, run_app

matplotlib.use("Agg")


def sweep_in_process(experiments, overrides: list[str], sweep_dir: Path):
    """A multirun of the app's config with ``experiments``, in this process, as ``run.py -m`` runs it."""
    app = point.PointApp(experiments, ROOT)

    def task(cfg):
        return app.run(cfg, job_info(HydraConfig.get()))

    register(task, app)
    GlobalHydra.instance().clear()
    hydra_ = Hydra.create_main_hydra_file_or_module(calling_file=str(ROOT / "experiments" / "run.py"),
                                                    calling_module=None, config_path="../conf", job_name="run")
    try:
        return hydra_.multirun(config_name="infer_sweep", task_function=task,
                               overrides=[*overrides, f"hydra.sweep.dir={sweep_dir}", "hydra.job.chdir=false"],
                               with_log_configuration=False)
    finally:
        GlobalHydra.instance().clear()


# --- a small experiment, defined here and nowhere else -----------------------------------------------
@dataclass
class SquaresConfig(Knobs):
    """Sum n squared gaussians."""

    n: int = knob(3, "how many values")


def run_squares(cfg: SquaresConfig, bench: BenchConfig, seed: int) -> list[VariantResult]:
    x = np.random.default_rng(seed).standard_normal(cfg.n)
    timing = bench.measure(lambda: float(x @ x), time.perf_counter())
    return [VariantResult("dot", {"sum_sq": float(x @ x), **timing.stats()}, timings={"dot": timing})]


def squares_report() -> Report:
    import matplotlib.pyplot as plt

    from experiments.reporting.plotting import save_figure

    def plots(df, out):
        fig, ax = plt.subplots()
        ax.plot(df["squares.n"], df["sum_sq"], "o")
        return [("Sum of squares", save_figure(fig, out / "squares.png"))]

    return Report(headline=("sum_sq",), plots=plots)


SQUARES = Experiment(name="squares", key="squares", schema=SquaresConfig, run=run_squares, report=squares_report,
                     columns=(Column("sum_sq", "", "Σ x²"), *timing_columns("time_median_s")))


@pytest.mark.usefixtures("hydra_restore_singletons")
def test_a_new_experiment_needs_its_own_code_its_yaml_and_a_registry_entry(tmp_path):
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "squares.yaml").write_text("# @package _global_\ndefaults:\n  - /schema/squares@squares\n\n"
                                       "experiment: squares\n")
    experiments = {**EXPERIMENTS, "squares": SQUARES}  # the app's registry plus one line
    register_schemas(experiments)
    sweep = tmp_path / "sweep"
    returns = sweep_in_process(experiments, ["experiment=squares", "squares.n=2,5", *FAST_BENCH,
                                             f"hydra.searchpath=[file://{tmp_path / 'conf'}]"], sweep)
    assert [r.return_value.status for r in returns[0]] == ["ok", "ok"]
    rows = [row for p in sorted(sweep.glob("*/results.csv")) for row in csv.DictReader(open(p))]
    assert [(r["experiment"], r["squares.n"], r["variant"], r["status"]) for r in rows] == [
        ("squares", "2", "dot", "ok"), ("squares", "5", "dot", "ok")]
    for r in rows:
        x = np.random.default_rng(0).standard_normal(int(r["squares.n"]))
        assert float(r["sum_sq"]) == float(x @ x) and float(r["time_median_s"]) > 0
    md = build_report([sweep], tmp_path / "report", tmp_path / "no_machine.json", experiments).read_text()
    assert "## Experiment `squares`" in md and "![Sum of squares](squares.png)" in md
    assert (tmp_path / "report" / "squares.png").stat().st_size > 0


@pytest.mark.usefixtures("hydra_restore_singletons")
@pytest.mark.parametrize("axis,trees", [("kv.seq_len=3,4,5", 1), ("qmethod=q8_0,q4_0,nf4", 3)])
def test_each_point_is_composed_and_validated_once(tmp_path, monkeypatch, axis, trees):
    """A 3-point sweep: three point compositions, the config tree composed once per choice of groups
    (value overrides are applied to it), none by the launcher, and three validations."""
    calls = {"tree": 0, "point": 0, "validate": 0}

    def counting(name, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config", counting("tree", ConfigLoaderImpl.load_sweep_config))
    monkeypatch.setattr(plan.Composer, "compose", counting("point", plan.Composer.compose))
    monkeypatch.setattr(point, "validate", counting("validate", point.validate))
    small = ["kv.d_model=16", "kv.n_heads=2", "quant.rows=8", "quant.cols=64"]
    experiment = "experiment=quantization" if axis.startswith("qmethod") else "experiment=kv_cache"
    returns = sweep_in_process(EXPERIMENTS, [experiment, axis, *(s for s in small if s[0] == experiment[11]),
                                             *FAST_BENCH], tmp_path)
    assert [r.return_value.status for r in returns[0]] == ["ok"] * 3
    assert calls == {"tree": trees, "point": 3, "validate": 3}


EXPERIMENTS_DIR = ROOT / "experiments"


def test_no_module_under_experiments_is_over_200_lines():
    sizes = {p.relative_to(ROOT): len(p.read_text().splitlines()) for p in EXPERIMENTS_DIR.rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > 200} == {}


def _imported_rooms(path: Path) -> set[str]:
    """The folders under experiments/ that a module imports from."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    return {m.split(".")[1] for m in imported if m.startswith("experiments.") and m.count(".") >= 1}


def test_the_framework_the_report_and_the_shared_room_import_no_experiment():
    experiment_packages = {e.run.__module__.split(".")[1] for e in EXPERIMENTS.values()}
    for folder in ("framework", "reporting", "shared"):
        for path in (EXPERIMENTS_DIR / folder).glob("*.py"):
            parts = _imported_rooms(path)
            assert parts.isdisjoint(experiment_packages | {"registry"}), (path, parts)


def test_no_experiment_imports_another():
    """What two experiments share lives in experiments/shared/ (the model knobs, the request record)."""
    experiment_packages = {e.run.__module__.split(".")[1] for e in EXPERIMENTS.values()}
    for name in experiment_packages:
        for path in (EXPERIMENTS_DIR / name).glob("*.py"):
            assert _imported_rooms(path) & experiment_packages <= {name}, path


#: The developers' background notes: never part of the project, so never cited (spelled in two parts so
#: that this file does not cite it either).
OUTSIDE_NOTES = "GUI" + "DE"


def test_no_file_cites_a_document_outside_the_project():
    files = [p for ext in ("py", "md", "yaml", "toml") for p in ROOT.rglob(f"*.{ext}")
             if not any(part.startswith(".") or part == "outputs" for part in p.relative_to(ROOT).parts)]
    assert files and [p for p in files if OUTSIDE_NOTES in p.read_text(encoding="utf-8")] == []


def test_documented_knobs_and_columns_match_the_code():
    """The tables in README.md and docs/ are the ones made from the schemas and column declarations."""
    from experiments import write_docs

    assert write_docs.stale() == {}, "run: python experiments/write_docs.py"
    made = write_docs.tables()
    config, rows = ((ROOT / "docs" / name).read_text() for name in ("config.md", "rows.md"))
    for exp in EXPERIMENTS.values():  # every knob and column is documented, with a meaning
        assert f"<!-- table:knobs.{exp.key} -->\n{made[f'knobs.{exp.key}']}" in config
        assert f"<!-- table:columns.{exp.name} -->\n{made[f'columns.{exp.name}']}" in rows
        for f in fields(exp.schema):
            assert f.metadata.get("help"), f"{exp.key}.{f.name} has no meaning"
        assert all(c.meaning for c in exp.columns)


def test_help_lists_every_knob_with_its_default_and_hides_internal_groups():
    proc = run_app("--help")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for key, schema in [("bench", BenchConfig), *((e.key, e.schema) for e in EXPERIMENTS.values())]:
        for name, default, _ in knobs(key, schema):
            assert f"{name}={default}" in text, name
    assert "experiment: " + ", ".join(sorted(EXPERIMENTS)) in text
    assert "schema" not in text.lower()
