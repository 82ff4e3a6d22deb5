"""Gather the ``results.csv`` of sweeps into one table, then the report: environment, one section per
experiment (its table, failures, its own part and plots), and the roofline over every experiment."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from experiments.framework.bench import BenchConfig
from experiments.framework.knobs import config_columns
from experiments.framework.spec import Experiment, Report
from experiments.framework.store import IDENTITY, OUTCOME, RESULTS
from experiments.reporting import drift, roofline
from experiments.reporting.html import write_html
from experiments.reporting.load import ReportError, find_results, load
from experiments.reporting.tables import fmt, markdown_table
from infer_core.measure.environment import Environment
from infer_core.measure.files import atomic_path, write_text_atomic

log = logging.getLogger(__name__)
__all__ = ["ReportError", "build_report"]
#: Environment columns that differ between rows by design, not between machines.
PER_ROW_ENVIRONMENT = ("started_utc", "concurrency")


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


def experiment_section(exp: Experiment, part: Report, df: pd.DataFrame, out: Path) -> str:
    """Table of the varying knobs, failed and skipped points, then the experiment's own ``part``."""
    keep = {*IDENTITY, *OUTCOME, "source"}
    df = df[[c for c in df.columns if c in keep or df[c].notna().any()]]  # drop other experiments' columns
    config = knob_columns(exp, df)
    vary = varying(df, config)
    flags = [c for c in ("unstable",) if c in df and c not in part.headline and df[c].notna().any()]
    shown = [c for c in ["variant", *vary, *part.headline, *flags, "status"] if c in df]  # noise shown where timed
    lines = [f"## Experiment `{exp.name}`", "", f"{len(df)} row(s) from {df['source'].nunique()} job(s).", ""]
    constant = [c for c in config if c not in vary]
    if constant:
        fixed = ", ".join(f"`{c}={fmt(df[c].iloc[0]) or 'null'}`" for c in constant)
        lines += [f"Fixed for every row: {fixed}.", ""]
    sort = [c for c in [*vary, "variant"] if c in df]
    lines += ["### Results", "", markdown_table(df.sort_values(sort)[shown] if sort else df[shown]), ""]
    for status, title in (("failed", "Failed points"), ("incomplete", "Incomplete points"),
                          ("skipped", "Skipped variants")):
        bad = df[df["status"] == status]
        if len(bad):
            cols = [c for c in ("overrides", "variant", "error", "source") if c in bad]
            lines += [f"### {title}", "", markdown_table(bad[cols]), ""]
    try:
        lines.append(part.sections(df))
        plots = part.plots(df, out)
    except Exception as exc:  # a figure that cannot be drawn must not cost the rest of the report
        log.exception("the %s part of the report failed", exp.name)
        return "\n".join([*lines, f"Could not draw this experiment's figures: {type(exc).__name__}: {exc}", ""])
    for title, path in plots:
        lines += [f"### {title}", "", f"![{title}]({path.name})", ""]
    if not plots:
        ok = int((df["status"] == "ok").sum())
        lines += [f"Nothing to plot: {ok} row(s) with status ok, which these figures need." if ok else
                  "Nothing to plot: no row has status ok.", ""]
    return "\n".join(lines)


def build_report(folders: list[Path], out: Path, machine_file: Path, experiments: Mapping[str, Experiment]) -> Path:
    """Write ``results.csv``, the plots and ``report.md`` into ``out``; return the report's path."""
    found = find_results(folders)
    df, left_out = load(found)
    for problem in left_out:
        log.warning("left out %s", problem)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / RESULTS) as tmp:
        df.to_csv(tmp, index=False)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    parts = ["# infer-sweep report", "", f"Generated {stamp} from {df['source'].nunique()} job folder(s) under "
             + ", ".join(f"`{f}`" for f in folders) + f"; all rows in `{RESULTS}`.", ""]
    if left_out:
        parts += ["**Left out** (not readable as a job's results):", ""] + [f"- {s}" for s in left_out] + [""]
    counts = df["status"].value_counts().to_dict()
    parts += ["Status: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), ""]
    parts.append(environment_section(df, [f.name for f in fields(Environment) if f.name in df]))
    parts.append(drift.section(found, out))
    labels = pd.Series(index=df.index, dtype=object)
    for name, rows in df.groupby("experiment", sort=True):
        exp = experiments.get(str(name))
        if exp is None:
            parts += [f"## Experiment `{name}`", "", f"{len(rows)} row(s) of an experiment this version does not "
                      "know: left out.", ""]
            continue
        part = exp.report()
        parts.append(experiment_section(exp, part, rows, out))
        try:
            if part.point_labels is not None:
                labels.update(part.point_labels(rows))
        except Exception:  # labels are a nicety: the roofline is drawn without them
            log.exception("the %s roofline labels failed", exp.name)
    try:
        parts.append(roofline.section(df, out, machine_file, labels))
    except Exception as exc:
        log.exception("the roofline failed")
        parts += ["## Roofline", "", f"Could not draw the roofline: {type(exc).__name__}: {exc}", ""]
    path = write_text_atomic(out / "report.md", "\n".join(parts) + "\n")
    write_html(path)  # report.html beside it: the same report, plots embedded
    return path
