"""Read every job's ``results.csv`` below some folders; name every file or row that cannot be read.

A point's rows count only through its manifest (``point.json``): a folder whose manifest is missing, not ``ok``
or lists a missing file gives no ``ok`` row; its rows are read as ``incomplete``, with the reason.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd

from experiments.framework.store import IDENTITY, OUTCOME, RESULTS, SCHEMA_VERSION, check_manifest, completeness

STATUSES = ("ok", "skipped", "failed")
INCOMPLETE = "incomplete"  # the rows of a point whose manifest does not vouch for them


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
    found: dict[Path, Path] = {}  # each file once, however its folder was written (relative, absolute, nested)
    for folder in folders:
        if not folder.is_dir():
            raise ReportError(f"{folder} is not a folder")
        for p in folder.rglob(RESULTS):
            if not (p.parent / "report.md").exists():
                found.setdefault(p.resolve(), p)
    return sorted(found.values())


def _checked(path: Path) -> tuple[tuple[list[str], list[list[str]]] | None, str]:
    """A job's header and complete rows, and what was wrong with the file ("" when nothing was)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"{path}: unreadable ({exc.strerror or exc})"
    if not data.strip():
        return None, f"{path}: empty file"
    try:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    except UnicodeDecodeError:
        return None, f"{path}: not UTF-8 text (a binary file?)"
    except csv.Error as exc:
        return None, f"{path}: not CSV ({exc})"
    header, body = rows[0], rows[1:]
    missing = [c for c in (*IDENTITY, *OUTCOME) if c not in header]
    if missing:
        return None, f"{path}: not a job's results (no {', '.join(missing)} column)"
    versions = {r[header.index("schema_version")] for r in body if len(r) == len(header)}
    if versions - {str(SCHEMA_VERSION)}:
        return None, f"{path}: schema_version {', '.join(sorted(versions))}, this report reads {SCHEMA_VERSION}"
    status = header.index("status")
    good = [r for r in body if len(r) == len(header) and r[status] in STATUSES]
    lost = len(body) - len(good)
    note = f"{path}: {lost} incomplete row(s) left out (a truncated file?)" if lost else ""
    if not good:
        return None, note or f"{path}: no rows"
    return (header, _vouched(path.parent, header, good)), note


def _vouched(folder: Path, header: list[str], rows: list[list[str]]) -> list[list[str]]:
    """The rows as their point's manifest vouches for them: unchanged when the point is complete and ok; else
    every row ``incomplete`` with the reason (a point that finished and recorded its failure keeps its
    ``failed`` rows)."""
    why = completeness(folder)
    if not why:
        return rows
    recorded = check_manifest(folder)[0] is not None
    status, error = header.index("status"), header.index("error")
    out = []
    for row in rows:
        row = list(row)
        if not (recorded and row[status] == "failed"):
            row[status], row[error] = INCOMPLETE, why
        out.append(row)
    return out


def _frames(groups: dict[tuple[str, ...], list[list[str]]]) -> list[pd.DataFrame]:
    """One DataFrame per distinct header, each parsed (and typed) by pandas once: thousands of small files
    read as one table each."""
    frames = []
    for header, rows in groups.items():
        buf = io.StringIO()
        csv.writer(buf).writerows([header, *rows])
        buf.seek(0)
        frames.append(pd.read_csv(buf))
    return frames


def load(paths: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """Concatenate the readable rows, with a ``source`` column (the job folder); every file (or row) left out
    is named with the reason."""
    groups: dict[tuple[str, ...], list[list[str]]] = {}
    problems = []
    at = len(IDENTITY)
    for path in paths:
        checked, problem = _checked(path)
        if problem:
            problems.append(problem)
        if checked is not None:
            header, rows = checked
            key = (*header[:at], "source", *header[at:])
            groups.setdefault(key, []).extend([*r[:at], str(path.parent), *r[at:]] for r in rows)
    if not groups:
        raise ReportError("no results.csv this report can read" + "".join(f"\n  {s}" for s in problems))
    return pd.concat(_frames(groups), ignore_index=True, sort=False), problems


def read_tables(paths: list[Path]) -> pd.DataFrame:
    """Plain CSV files (``samples.csv``, sidecars) as one table with a ``source`` column; unreadable ones skipped."""
    groups: dict[tuple[str, ...], list[list[str]]] = {}
    for path in paths:
        try:
            rows = list(csv.reader(io.StringIO(path.read_text())))
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
        if len(rows) > 1:
            groups.setdefault((*rows[0], "source"), []).extend([*r, str(path.parent)] for r in rows[1:]
                                                               if len(r) == len(rows[0]))
    return pd.concat(_frames(groups), ignore_index=True, sort=False) if groups else pd.DataFrame()
