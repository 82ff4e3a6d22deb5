"""Every file a point writes, and what a resume or a report reads back.

A point's folder holds ``results.csv`` (one row per variant), ``samples.csv`` (every raw timing
sample), one ``<stem>.csv`` per sidecar table, and last ``point.json``, the manifest: status,
errors, summary, ``config_hash`` and the files written. Every write is atomic (a temporary file
renamed into place), and the manifest is written only after every other file exists, so a
point counts as complete only when its manifest says ``ok`` and lists files that are all there.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from experiments.framework.spec import Column
from infer_core.measure.files import write_text_atomic

SCHEMA_VERSION = 2
RESULTS = "results.csv"
SAMPLES = "samples.csv"
MANIFEST = "point.json"
CANARY = "canary.csv"
CANARY_COLUMNS = (
    Column("pass", "", "the pass the reading was taken before"),
    Column("at_utc", "", "when (UTC, ISO 8601)"),
    Column("copy_gbps", "GB/s", "a 64 MiB float64 copy, median of 3 (read + write counted)"),
    Column("sgemm_gflops", "GFLOP/s", "a 512×512 float32 product, median of 5"),
    Column("seconds", "s", "what the reading cost"),
)

#: Column groups of ``results.csv``, in order: identity, config, metrics, environment, outcome.
IDENTITY_COLUMNS = (
    Column("schema_version", "", f"version of this row layout ({SCHEMA_VERSION}); the report reads only its own"),
    Column("experiment", "", "the experiment (`experiment=`)"),
    Column("variant", "", "what this row measured within the point: a strategy, a method, a weight variant"),
    Column("run_id", "", "the sweep's (or run's) folder name"),
    Column("job_num", "", "the point's number in its sweep (0 for a single run)"),
    Column("overrides", "", "the point's command-line overrides, run control left out"),
    Column("config_hash", "", "hash of the experiment and its effective config (the knobs that acted)"),
)
OUTCOME_COLUMNS = (
    Column("status", "", "`ok`, `skipped` (over the time budget) or `failed`; a report reads a row as `incomplete` "
                         "when its point's manifest does not vouch for it"),
    Column("error", "", "why, in one line, when not ok"),
)
IDENTITY = tuple(c.name for c in IDENTITY_COLUMNS)
OUTCOME = tuple(c.name for c in OUTCOME_COLUMNS)
SIDECAR_IDENTITY = ("experiment", "variant", "run_id", "job_num", "config_hash")
SAMPLE_COLUMNS = ("schema_version", *SIDECAR_IDENTITY, "measure", "sample", "pass", "inner_loops", "time_s",
                  "cpu_time_s")
SAMPLE_MEANINGS = (
    Column("measure", "", "which timed operation (`generate`, `quantize`, `dequantize`, `matmul` ...)"),
    Column("sample", "", "the sample's number, 0 to sweep.rounds × bench.repeats − 1"),
    Column("pass", "", "the pass that took it, 1 to `sweep.rounds` (passes are spread over the sweep)"),
    Column("inner_loops", "", "calls in the sample", kind="measurement"),
    Column("time_s", "s", "wall time per call in this sample", kind="sample"),
    Column("cpu_time_s", "s", "process CPU time per call in this sample", kind="sample"),
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
    value = value.item() if isinstance(value, np.generic) else value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def to_csv(rows: Iterable[Mapping[str, Any]], columns: Iterable[str]) -> str:
    """Rows as CSV text with a header, in the given column order; missing cells are empty."""
    columns, buf = list(columns), io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerows([columns, *([_cell(row.get(c)) for c in columns] for row in rows)])
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


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``point.json``: call it after every file it lists is written."""
    return write_text_atomic(folder / MANIFEST, json.dumps(dict(manifest), indent=2) + "\n")


def clear_manifest(folder: Path) -> None:
    """Remove a point's manifest before it runs again: until a new one is written it is not complete."""
    (folder / MANIFEST).unlink(missing_ok=True)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a point whose every listed file exists; None otherwise (missing, partial, unreadable)."""
    return check_manifest(folder)[0]


def check_manifest(folder: Path) -> tuple[dict[str, Any] | None, str]:
    """The manifest of a point whose every listed file exists, and "" ; else None and why, in words."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"no manifest ({MANIFEST}): the point did not finish writing its files"
    except (OSError, ValueError) as exc:
        return None, f"its manifest ({MANIFEST}) cannot be read: {type(exc).__name__}"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        return None, f"its manifest ({MANIFEST}) is not a point's manifest"
    missing = [name for name in manifest["files"] if not (folder / str(name)).is_file()]
    if missing:
        return None, f"its manifest lists {', '.join(map(str, missing))}, which is missing"
    return manifest, ""


def completeness(folder: Path) -> str:
    """"" when the point in ``folder`` is complete and ok; else why its rows cannot count as results."""
    manifest, why = check_manifest(folder)
    if manifest is None:
        return why
    if manifest.get("status") != "ok":
        errors = "; ".join(map(str, manifest.get("errors") or [])) or "no reason recorded"
        return f"the point's manifest says {manifest.get('status')}: {errors}"
    return ""


def write_point(folder: Path, identity: Mapping[str, Any], flat: Mapping[str, Any], results: list[Any],
                env: Mapping[str, Any], declared: list[str], pass_of: Mapping[tuple[str, str], list[int]],
                canary: list[Mapping[str, Any]]) -> list[str]:
    """Write a point's ``results.csv``, ``samples.csv``, its sidecars and ``canary.csv`` (its drift canary, one
    reading per pass, when it took any); return the names written.

    ``results`` are :class:`~experiments.framework.spec.VariantResult`; the columns are the identity, the
    config, the ``declared`` metrics (then any undeclared one: a metric is never dropped), the environment
    and the outcome, in that order. ``pass_of`` gives the pass of each sample by (variant, measure) (1 when absent).
    """
    rows = [{**identity, "variant": r.variant, **flat, **r.metrics, **env, "status": r.status, "error": r.error}
            for r in results]
    undeclared = [k for r in results for k in r.metrics if k not in declared]
    write_csv(folder / RESULTS, rows, [*IDENTITY, *flat, *declared, *dict.fromkeys(undeclared), *env, *OUTCOME])
    samples = [
        {**identity, "variant": r.variant, "measure": measure, "sample": i, "pass": passes[i], "inner_loops": loops,
         "time_s": wall, "cpu_time_s": cpu}
        for r in results
        for measure, t in r.timings.items()
        for passes in [pass_of.get((r.variant, measure)) or [1] * t.n]
        for i, (wall, cpu, loops) in enumerate(zip(t.per_call_s, t.cpu_per_call_s, t.inner_loops, strict=True))
    ]
    write_csv(folder / SAMPLES, samples, SAMPLE_COLUMNS)
    files = [RESULTS, SAMPLES]
    if canary:
        head = {k: identity.get(k) for k in ("experiment", "run_id", "job_num", "config_hash")}
        write_csv(folder / CANARY, [{**head, **c} for c in canary], [*head, *(c.name for c in CANARY_COLUMNS)])
        files.append(CANARY)
    for stem in dict.fromkeys(stem for r in results for stem in r.sidecars):
        tables = [(r.variant, r.sidecars[stem]) for r in results if stem in r.sidecars]
        files.append(write_sidecar(folder / f"{stem}.csv", identity, tables).name)
    return files
