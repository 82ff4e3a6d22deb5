"""Gather the ``results.csv`` of one or more sweeps into plots and a Markdown report.

    python experiments/report.py                          # the newest sweep under outputs/sweeps
    python experiments/report.py outputs/sweeps/NAME --out my_report

Writes ``<out>/results.csv`` (every row, concatenated), one set of PNGs per experiment
(from its report module) and ``<out>/report.md``. Default ``<out>``: ``<sweep>/report``.
"""

from __future__ import annotations

import argparse
import importlib
import io
import sys
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib

matplotlib.use("Agg")
import pandas as pd

from experiments import registry, roofline_report
from experiments.results import ENVIRONMENT, IDENTITY, RESULTS, SCHEMA_VERSION
from experiments.tables import config_columns, fmt, markdown_table
from infer_core.files import write_text_atomic
from infer_core.machine import DEFAULT_CACHE

SWEEPS = Path("outputs/sweeps")


class ReportError(RuntimeError):
    """Nothing to report on, or a folder that does not exist."""


def newest_sweep(root: Path = SWEEPS) -> Path:
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
        if "source" in df:
            skipped.append(f"{path}: a report's own concatenation, not a job's results")
            continue
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


def varying(df: pd.DataFrame, columns: list[str]) -> list[str]:
    """The columns among ``columns`` that take more than one value in ``df``."""
    return [c for c in columns if c in df and df[c].astype(str).nunique(dropna=False) > 1]


def environment_section(df: pd.DataFrame) -> str:
    """Distinct environments, and warnings a reader of the numbers must see."""
    env = [c for c in ENVIRONMENT if c in df and c not in ("started_utc", "concurrency")]
    table = df[env].drop_duplicates().astype(str)
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


def experiment_section(name: str, df: pd.DataFrame, out: Path) -> str:
    """Table of the varying columns, failed and skipped points, then the experiment's own part."""
    exp = registry.get(name)
    module = importlib.import_module(exp.report)
    df = df.dropna(axis=1, how="all")  # other experiments' columns
    config = config_columns(df)
    vary = varying(df, config)
    shown = [c for c in ["variant", *vary, *module.HEADLINE, "status"] if c in df]
    lines = [f"## Experiment `{name}`", "", f"{len(df)} row(s) from {df['source'].nunique()} job(s).", ""]
    constant = [c for c in config if c not in vary and c in df]
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
    lines.append(module.sections(df))
    for title, path in module.plots(df, out):
        lines += [f"### {title}", "", f"![{title}]({path.name})", ""]
    return "\n".join(lines)


def build_report(folders: list[Path], out: Path, machine_file: Path = DEFAULT_CACHE) -> Path:
    """Write ``results.csv``, the plots and ``report.md`` into ``out``; return the report's path."""
    df, skipped = load(find_results(folders))
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    write_text_atomic(out / RESULTS, buf.getvalue())
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    parts = [
        "# infer-sweep report",
        "",
        f"Generated {stamp} from {df['source'].nunique()} job folder(s) under "
        + ", ".join(f"`{f}`" for f in folders) + f"; all rows in `{RESULTS}`.",
        "",
    ]
    if skipped:
        parts += ["Skipped files:", ""] + [f"- {s}" for s in skipped] + [""]
    counts = df["status"].value_counts().to_dict()
    parts += ["Status: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), ""]
    parts.append(environment_section(df))
    for name, part in df.groupby("experiment", sort=True):
        parts.append(experiment_section(str(name), part.reset_index(drop=True), out))
    parts.append(roofline_report.section(df, out, Path(machine_file)))
    return write_text_atomic(out / "report.md", "\n".join(parts) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", type=Path, help="sweep or run folders (default: newest sweep)")
    parser.add_argument("--out", type=Path, help="report folder (default: <first folder>/report)")
    parser.add_argument("--machine", type=Path, default=DEFAULT_CACHE,
                        help=f"machine reference for the roofline (default: {DEFAULT_CACHE})")
    args = parser.parse_args(argv)
    try:
        folders = args.folders or [newest_sweep()]
        out = args.out or folders[0] / "report"
        path = build_report(folders, out, args.machine)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
