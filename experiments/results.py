"""Tidy result rows (GUIDE §3): column order, flattening, atomic CSV writes and reads."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from infer_core.files import write_text_atomic

SCHEMA_VERSION = 1
SIDECAR_IDENTITY = ("experiment", "variant", "run_id", "job_num", "config_hash")
RESULTS = "results.csv"
SAMPLES = "samples.csv"

IDENTITY = ("schema_version", "experiment", "variant", "run_id", "job_num", "overrides", "config_hash")
ENVIRONMENT = (
    "python",
    "numpy",
    "blas",
    "blas_threads",
    "cpu",
    "n_cpus",
    "platform",
    "git_commit",
    "git_dirty",
    "started_utc",
    "concurrency",
)
OUTCOME = ("status", "error")
SAMPLE_COLUMNS = (
    "schema_version",
    "experiment",
    "variant",
    "run_id",
    "job_num",
    "config_hash",
    "measure",
    "sample",
    "inner_loops",
    "time_s",
    "cpu_time_s",
)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"kv": {"seq_len": 10}}`` -> ``{"kv.seq_len": 10}``; lists become ``a,b,c`` strings."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ",".join(str(_plain(v)) for v in value)
        else:
            flat[name] = _plain(value)
    return flat


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _cell(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def to_csv(rows: Iterable[Mapping[str, Any]], columns: Iterable[str]) -> str:
    """Rows as CSV text with a header, in the given column order; missing cells are empty."""
    columns = list(columns)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buf.getvalue()


def write_csv(path: Path, rows: list[Mapping[str, Any]], columns: Iterable[str]) -> Path:
    """Write rows to ``path`` atomically (temp file + rename)."""
    return write_text_atomic(path, to_csv(rows, columns))


def write_sidecar(path: Path, identity: Mapping[str, Any], tables: list[tuple[str, Mapping[str, Any]]]) -> Path:
    """Write columnar tables (one per variant) as one CSV, each row led by the point's identity."""
    columns = [*SIDECAR_IDENTITY, *dict.fromkeys(c for _, table in tables for c in table)]
    rows = []
    for variant, table in tables:
        length = len(next(iter(table.values()))) if table else 0
        head = {**{k: identity.get(k) for k in SIDECAR_IDENTITY}, "variant": variant}
        rows += [{**head, **{c: table[c][i] for c in table}} for i in range(length)]
    return write_csv(path, rows, columns)


def read_csv(path: Path) -> list[dict[str, str]]:
    """Read a CSV back as dicts of strings (no eval, no pickle)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
