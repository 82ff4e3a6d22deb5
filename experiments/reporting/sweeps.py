"""What a comparison pairs: a sweep's rows, the raw samples of its timed operations (``samples.csv``) and the
latencies of its served requests (``requests.csv`` of the serve and batching experiments)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.framework.store import CANARY, SAMPLES
from experiments.reporting.drift import series
from experiments.reporting.load import ReportError, find_results, load, read_tables
from experiments.shared.requests import LATENCIES

#: The ``requests.csv`` sidecar (serve, batching; one schema, :mod:`experiments.shared.requests`): its latencies are
#: compared as samples of the point, one per request that completed (TPOT only where it produced several tokens).
REQUESTS = "requests.csv"


@dataclass
class Sweep:
    """One sweep's rows (``source``: the job folder), its samples and its per-request tables."""

    label: str
    folder: Path
    rows: pd.DataFrame
    samples: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    requests: pd.DataFrame = field(default_factory=pd.DataFrame)
    canary: pd.DataFrame = field(default_factory=pd.DataFrame)  # every point's canary readings (``source``: its folder)


@dataclass(frozen=True)
class Samples:
    """A timed line's samples in one sweep: times per call (s), and the pass of each (None: requests, one run)."""

    times: np.ndarray
    passes: np.ndarray | None = None


def read_sweep(folder: Path, label: str) -> Sweep:
    """Every result, sample and per-request table below ``folder``."""
    paths = find_results([folder])
    if not paths:
        raise ReportError(f"{folder}: no results.csv below it")
    rows, problems = load(paths)
    samples = read_tables([p.parent / SAMPLES for p in paths if (p.parent / SAMPLES).exists()])
    requests = read_tables([p.parent / REQUESTS for p in paths if (p.parent / REQUESTS).exists()])
    canary = read_tables([p.parent / CANARY for p in paths if (p.parent / CANARY).exists()])
    return Sweep(label, folder, rows, samples, problems, requests, series(canary))


def point_samples(sweep: Sweep, normalize: str | None = None, speed: float = 1.0
                  ) -> dict[tuple[str, str], dict[str, Samples]]:
    """(job folder, variant) -> measure -> its per-call times (s) and their passes, or its requests' latencies (s).
    ``normalize`` (a canary column, ``copy_gbps`` or ``sgemm_gflops``): each timed sample multiplied by the canary's
    reading before its pass, divided by ``speed`` (a time on a machine as fast as that), where the point read one."""
    out: dict[tuple[str, str], dict[str, Samples]] = {}
    samples, requests = sweep.samples, sweep.requests
    if normalize and not samples.empty and not sweep.canary.empty and "pass" in samples:
        reading = sweep.canary.set_index(["source", "pass"])[normalize]
        index = pd.MultiIndex.from_arrays([samples["source"], pd.to_numeric(samples["pass"], errors="coerce")])
        factor = reading[~reading.index.duplicated()].reindex(index).to_numpy() / speed
        samples = samples.assign(time_s=pd.to_numeric(samples["time_s"]) * np.where(np.isnan(factor), 1.0, factor))
    if not samples.empty and "measure" in samples:
        passes = pd.to_numeric(samples["pass"], errors="coerce").fillna(1) if "pass" in samples else \
            pd.Series(1, index=samples.index)  # samples written before passes were: one pass
        for (source, variant, measure), g in samples.groupby(["source", "variant", "measure"], sort=False):
            out.setdefault((str(source), str(variant)), {})[str(measure)] = Samples(
                g["time_s"].to_numpy(dtype=np.float64), passes[g.index].to_numpy(dtype=np.int64))
    if requests.empty or "variant" not in requests:
        return out
    done = requests.get("error", pd.Series("", index=requests.index)).fillna("").astype(str).eq("")
    several = pd.to_numeric(requests.get("output_tokens", pd.Series(2, index=requests.index)), errors="coerce") > 1
    for col, measure in ((c, m) for c, m in LATENCIES.items() if c in requests):
        ms = pd.to_numeric(requests[col], errors="coerce")
        keep = ms.notna() & done & (several | (col != "tpot_ms"))
        for (source, variant), g in (ms[keep] / 1e3).groupby([requests["source"][keep], requests["variant"][keep]]):
            out.setdefault((str(source), str(variant)), {})[measure] = Samples(g.to_numpy(dtype=np.float64))
    return out


def as_text(value: object) -> str:
    """A knob's value as the command line writes it: 1024, not the 1024.0 a CSV column of numbers reads back."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def split(sweep: Sweep, column: str, values: list[str] | None = None) -> list[Sweep]:
    """One sweep's points by the value of one knob (``report.py compare --between column[=A,B]``): a sweep per value,
    in the order given (default: the order of the points), each with its points' rows, samples, requests and canary
    readings, labelled ``column=value``."""
    rows = sweep.rows
    if column not in rows:
        raise ReportError(f"--between {column}: no such column in the rows of {sweep.folder}")
    have = rows[column].map(as_text).where(rows[column].notna())
    order = list(dict.fromkeys(have.dropna()))
    values = values or order
    missing = [v for v in values if v not in order]
    if missing or len(values) < 2:
        why = f"{', '.join(missing)} not among its values" if missing else f"{len(order)} value(s)"
        raise ReportError(f"--between {column}: {why} in {sweep.folder} ({', '.join(order) or 'none'}); name two or "
                          f"more, as --between {column}=A,B")
    out = []
    for k, value in enumerate(values):
        sources = set(rows.loc[have == value, "source"])
        def pick(df: pd.DataFrame, s: set = sources) -> pd.DataFrame:
            return df[df["source"].isin(s)] if "source" in df else df
        out.append(Sweep(f"{column}={value}", sweep.folder, rows[have == value], pick(sweep.samples),
                         sweep.problems if k == 0 else [], pick(sweep.requests), pick(sweep.canary)))
    return out
