"""Gather the ``results.csv`` of sweeps into one table, then the report: environment, one section per
experiment (its table, failures, its own part and plots), and the roofline over every experiment."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from experiments.framework.bench import BenchConfig
from experiments.framework.knobs import config_columns
from experiments.framework.spec import Experiment
from experiments.framework.store import IDENTITY, RESULTS, SCHEMA_VERSION
from experiments.reporting import roofline
from experiments.reporting.tables import fmt, markdown_table
from infer_core.environment import Environment
from infer_core.files import write_text_atomic

#: Environment columns that differ between rows by design, not between machines.
PER_ROW_ENVIRONMENT = ("started_utc", "concurrency")


class ReportError(RuntimeError):
    """Nothing to report on, or a folder that does not exist."""


def newest_sweep(root: Path) -> Path:
    """The most recently modified sweep folder under ``root``."""
    sweeps = [p for p in root.glob("*") if p.is_dir()] if root.is_dir() else []
    if not sweeps:
        raise ReportError(f"no sweep under {root}/: run `python experiments/run.py -m ...` first")
    return max(sweeps, key=lambda p: p.stat().st_mtime)


def find_results(folders: list[Path]) -> list[Path]:
    """Every job's ``results.csv`` below the folders; report folders (holding report.md) are not inputs."""
    found = set()
    for folder in folders:
        if not folder.is_dir():
            raise ReportError(f"{folder} is not a folder")
        found.update(p for p in folder.rglob(RESULTS) if not (p.parent / "report.md").exists())
    return sorted(found)


def load(paths: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """Concatenate the CSVs; files of an unknown schema version are skipped and named."""
    frames, skipped = [], []
    for path in paths:
        df = pd.read_csv(path)
        versions = set(df.get("schema_version", pd.Series([None])).dropna().astype(int))
        if not versions or versions - {SCHEMA_VERSION}:
            found = sorted(versions) or "missing"
            skipped.append(f"{path}: schema_version {found}, this report reads {SCHEMA_VERSION}")
            continue
        df.insert(len(IDENTITY), "source", str(path.parent))
        frames.append(df)
    if not frames:
        raise ReportError("no results.csv this report can read" + "".join(f"\n  {s}" for s in skipped))
    return pd.concat(frames, ignore_index=True, sort=False), skipped


def knob_columns(exp: Experiment, df: pd.DataFrame) -> list[str]:
    """The config columns of ``exp`` present in ``df``: seed, ``bench.*``, its knobs."""
    names = ["seed", *config_columns("bench", BenchConfig), *config_columns(exp.key, exp.schema)]
    return [c for c in names if c in df]


def varying(df: pd.DataFrame, columns: list[str]) -> list[str]:
    """The columns among ``columns`` that take more than one value in ``df``."""
    return [c for c in columns if c in df and df[c].astype(str).nunique(dropna=False) > 1]


def environment_section(df: pd.DataFrame, environment: list[str]) -> str:
    """Distinct environments, and warnings a reader of the numbers must see."""
    table = df[[c for c in environment if c not in PER_ROW_ENVIRONMENT]].drop_duplicates().astype(str)
    lines = ["## Environment", "", markdown_table(table), ""]
    warnings = []
    if len(table) > 1:
        warnings.append("rows come from more than one environment: compare timings only within one")
    if "concurrency" in df and (df["concurrency"].fillna(1) > 1).any():
        n = int((df["concurrency"].fillna(1) > 1).sum())
        warnings.append(f"{n} row(s) were timed while other jobs ran at once (concurrency > 1): "
                        "they shared cores and memory bandwidth, so their timings are not comparable "
                        "with serial ones")
    if "unstable" in df and df["unstable"].astype(str).eq("True").any():
        n = int(df["unstable"].astype(str).eq("True").sum())
        warnings.append(f"{n} row(s) are flagged unstable (CV > 10% or a sample under 1 ms)")
    if "git_dirty" in df and df["git_dirty"].astype(str).eq("True").any():
        warnings.append("some rows were measured with uncommitted changes (git_dirty)")
    if warnings:
        lines += ["**Warnings**", ""] + [f"- {w}" for w in warnings] + [""]
    return "\n".join(lines)


def experiment_section(exp: Experiment, df: pd.DataFrame, out: Path) -> str:
    """Table of the varying knobs, failed and skipped points, then the experiment's own part."""
    part = exp.report()
    df = df.dropna(axis=1, how="all")  # other experiments' columns
    config = knob_columns(exp, df)
    vary = varying(df, config)
    shown = [c for c in ["variant", *vary, *part.headline, "status"] if c in df]
    lines = [f"## Experiment `{exp.name}`", "", f"{len(df)} row(s) from {df['source'].nunique()} job(s).", ""]
    constant = [c for c in config if c not in vary]
    if constant:
        fixed = ", ".join(f"`{c}={fmt(df[c].iloc[0]) or 'null'}`" for c in constant)
        lines += [f"Fixed for every row: {fixed}.", ""]
    sort = [c for c in [*vary, "variant"] if c in df]
    lines += ["### Results", "", markdown_table(df.sort_values(sort)[shown] if sort else df[shown]), ""]
    for status, title in (("failed", "Failed points"), ("skipped", "Skipped variants")):
        bad = df[df["status"] == status]
        if len(bad):
            cols = [c for c in ("overrides", "variant", "error", "source") if c in bad]
            lines += [f"### {title}", "", markdown_table(bad[cols]), ""]
    lines.append(part.sections(df))
    for title, path in part.plots(df, out):
        lines += [f"### {title}", "", f"![{title}]({path.name})", ""]
    return "\n".join(lines)


def build_report(folders: list[Path], out: Path, machine_file: Path, experiments: Mapping[str, Experiment]) -> Path:
    """Write ``results.csv``, the plots and ``report.md`` into ``out``; return the report's path."""
    df, skipped = load(find_results(folders))
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    write_text_atomic(out / RESULTS, buf.getvalue())
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    parts = ["# infer-sweep report", "", f"Generated {stamp} from {df['source'].nunique()} job folder(s) under "
             + ", ".join(f"`{f}`" for f in folders) + f"; all rows in `{RESULTS}`.", ""]
    if skipped:
        parts += ["Skipped files:", ""] + [f"- {s}" for s in skipped] + [""]
    counts = df["status"].value_counts().to_dict()
    parts += ["Status: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), ""]
    parts.append(environment_section(df, [f.name for f in fields(Environment) if f.name in df]))
    labels = pd.Series(index=df.index, dtype=object)
    for name, rows in df.groupby("experiment", sort=True):
        exp = experiments.get(str(name))
        if exp is None:
            parts += [f"## Experiment `{name}`", "", f"{len(rows)} row(s) of an experiment this version does not "
                      "know: left out.", ""]
            continue
        parts.append(experiment_section(exp, rows, out))
        if exp.report().point_labels is not None:
            labels.update(exp.report().point_labels(rows))
    parts.append(roofline.section(df, out, machine_file, labels))
    return write_text_atomic(out / "report.md", "\n".join(parts) + "\n")
