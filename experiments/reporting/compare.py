"""Two or more sweeps side by side: rows paired by experiment, variant and every knob that varies within a
sweep; each timed operation compared on its raw samples (``samples.csv``, :mod:`experiments.reporting.stats`),
and the served requests' latencies likewise (``requests.csv``), every exact figure (counts, bytes, errors,
SQNR) compared for equality, unmatched points listed.

What differs between the sweeps as wholes (the environment, or a knob constant within each sweep but not
across them, such as ``bench.threads``) is what the comparison compares: it heads the comparison, and is
not a pairing key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from experiments.framework.spec import Experiment
from experiments.reporting.gather import knob_columns
from experiments.reporting.load import INCOMPLETE, ReportError
from experiments.reporting.stats import SLOWER, compare_batch
from experiments.reporting.sweeps import Sweep, point_samples
from infer_core.measure.environment import Environment

#: The environment columns of every row, and the engine's and server's versions where an experiment records them.
ENVIRONMENT = (*Environment.__dataclass_fields__, "engine_version", "server_version")
PER_ROW = ("started_utc",)
def environment_changes(sweeps: list[Sweep]) -> pd.DataFrame:
    """Environment columns whose values differ between the sweeps: one row per column, one column per sweep."""
    out = {}
    for col in ENVIRONMENT:
        if col in PER_ROW or not any(col in s.rows for s in sweeps):
            continue
        values = [", ".join(sorted(s.rows[col].astype(str).unique())) if col in s.rows else "" for s in sweeps]
        if len(set(values)) > 1:
            out[col] = values
    return pd.DataFrame(out, index=[s.label for s in sweeps]).T.rename_axis("environment").reset_index()


def machine_roofs(sweeps: list[Sweep]) -> pd.DataFrame:
    """The machine's own peaks and bandwidths where the sweeps measured them (``experiment=machine`` rows): when
    these moved, every timing on the machine moved with them, whatever the code did."""
    frames = []
    for s in sweeps:
        rows = s.rows[(s.rows["experiment"] == "machine") & (s.rows["status"] == "ok")]
        if rows.empty:
            return pd.DataFrame()
        value = rows["gflops"].fillna(rows["gb_per_s"]) if "gb_per_s" in rows else rows["gflops"]
        unit = np.where(rows["gflops"].notna(), "GFLOP/s", "GB/s")
        frames.append(pd.DataFrame({"roof": rows["variant"] + " (" + unit + ")", s.label: value.to_numpy()})
                      .groupby("roof").median())
    table = pd.concat(frames, axis=1).dropna()
    table["ratio"] = table.iloc[:, -1] / table.iloc[:, 0]
    return table.reset_index()


def split_knobs(exp: Experiment, parts: list[pd.DataFrame]) -> tuple[list[str], dict[str, list[str]]]:
    """The knobs that vary within some sweep (the pairing key), and those constant within each sweep but set
    differently across them (what is being compared), with their values."""
    columns = sorted({c for df in parts for c in knob_columns(exp, df)}, key=lambda c: (c != "seed", c))
    varying, settings = [], {}
    for col in columns:
        values = [df[col].astype(str).unique() if col in df else np.array(["(absent)"]) for df in parts]
        if any(len(v) > 1 for v in values):
            varying.append(col)
        elif len({v[0] for v in values}) > 1:
            settings[col] = [str(v[0]) for v in values]
    return varying, settings


def natural(text: str) -> list:
    """A sort key that orders the numbers in ``text`` by value: seq_len=20 before seq_len=100."""
    return [float(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+(?:\.\d+)?)", text))]


def _key(df: pd.DataFrame, keys: list[str]) -> pd.Series:
    """A point's name: its variant and the values of the pairing knobs."""
    if df.empty:
        return pd.Series(dtype=str, index=df.index)
    def value(v: object) -> str:
        return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)

    knobs = df.reindex(columns=keys)
    named = knobs.apply(lambda row: ", ".join(f"{k}={value(v)}" for k, v in row.items() if not pd.isna(v)), axis=1)
    return df["variant"].astype(str) + (" · " + named if keys else "")


@dataclass
class Comparison:
    """Everything a comparison found."""

    labels: list[str]
    environment: pd.DataFrame
    machine: pd.DataFrame  # the machine's roofs as each sweep measured them (empty when not measured)
    settings: dict[str, dict[str, list[str]]]  # experiment -> knob -> value per sweep
    timed: pd.DataFrame  # one row per (pair, sweep B, measure)
    exact: pd.DataFrame  # one row per (pair, sweep B, column) that differs
    exact_checked: int
    unmatched: pd.DataFrame  # experiment, point, only in
    left_out: list[str] = field(default_factory=list)  # files, points and experiments not compared, and why


def compare(sweeps: list[Sweep], experiments: Mapping[str, Experiment], threshold: float) -> Comparison:
    """Pair every later sweep's rows with the first's and compare them."""
    base, lines, samples, exact, unmatched, settings, checked = sweeps[0], [], [], [], [], {}, 0
    left_out = left_out_of(sweeps)
    times = [point_samples(s) for s in sweeps]
    for name in sorted(set().union(*(set(s.rows["experiment"]) for s in sweeps))):
        exp = experiments.get(name)
        if exp is None:
            left_out.append(f"experiment {name}: not known to this version")
            continue
        parts = [s.rows[(s.rows["experiment"] == name) & (s.rows["status"] == "ok")] for s in sweeps]
        empty = [s.label for s, part in zip(sweeps, parts, strict=True) if part.empty]
        if empty:
            left_out.append(f"experiment {name}: not compared, no complete (ok) point in {', '.join(empty)}")
            continue
        keys, settings[name] = split_knobs(exp, parts)
        keyed = [p.assign(point=_key(p, keys)).drop_duplicates("point").set_index("point") for p in parts]
        exact_cols = [c.name for c in exp.columns if c.kind == "exact"]
        a = keyed[0]
        for sweep, b, tb in zip(sweeps[1:], keyed[1:], times[1:], strict=True):
            for point in a.index.symmetric_difference(b.index):
                unmatched.append({"experiment": name, "point": point,
                                  "only in": base.label if point in a.index else sweep.label})
            common = sorted(a.index.intersection(b.index), key=natural)
            for point, ra, rb in zip(common, a.loc[common].to_dict("records"), b.loc[common].to_dict("records"),
                                      strict=True):
                xa = times[0].get((str(ra["source"]), str(ra["variant"])), {})
                xb = tb.get((str(rb["source"]), str(rb["variant"])), {})
                for measure in sorted(set(xa) & set(xb)):
                    lines.append({"experiment": name, "point": point, "measure": measure, "sweep": sweep.label})
                    samples.append((xa[measure], xb[measure]))
                for col in (c for c in exact_cols if c in ra and c in rb):
                    checked += 1
                    va, vb = ra[col], rb[col]
                    if not (pd.isna(va) and pd.isna(vb)) and str(va) != str(vb):
                        exact.append({"experiment": name, "point": point, "sweep": sweep.label, "column": col,
                                      base.label: va, "value": vb})
    if not lines and checked == 0:
        raise ReportError("nothing to compare: no experiment has complete (ok) points in every sweep"
                          + "".join(f"\n  {s}" for s in left_out))
    return Comparison([s.label for s in sweeps], environment_changes(sweeps), machine_roofs(sweeps), settings,
                      _timed(lines, samples, threshold), pd.DataFrame(exact), checked,
                      pd.DataFrame(unmatched, columns=["experiment", "point", "only in"]), left_out)


def left_out_of(sweeps: list[Sweep]) -> list[str]:
    """The files no sweep could read and the points no manifest vouches for, one line each."""
    out = [f"{s.label}: {problem}" for s in sweeps for problem in s.problems]
    for s in sweeps:
        bad = s.rows[s.rows["status"] == INCOMPLETE].drop_duplicates("source")
        out += [f"{s.label}: {row.get('source')}: {row.get('error')}" for row in bad.to_dict("records")]
    return out


def _timed(lines: list[dict], samples: list[tuple[np.ndarray, np.ndarray]], threshold: float) -> pd.DataFrame:
    """The timed lines with their statistics, computed in batches of pairs with the same sample counts."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (xa, xb) in enumerate(samples):
        groups.setdefault((len(xa), len(xb)), []).append(i)
    for idx in groups.values():
        changes = compare_batch(np.stack([samples[i][0] for i in idx]), np.stack([samples[i][1] for i in idx]),
                                threshold)
        for i, c in zip(idx, changes, strict=True):
            xa, xb = samples[i]
            lines[i].update(median_a_s=float(np.median(xa)), median_b_s=float(np.median(xb)), ratio=c.ratio,
                            ratio_low=c.low, ratio_high=c.high, p_value=c.p_value, verdict=c.verdict)
    return pd.DataFrame(lines)


def regressions(result: Comparison, limit: float) -> pd.DataFrame:
    """Timed lines significantly slower by more than ``limit`` (0.10: 10%)."""
    t = result.timed
    if t.empty:
        return t
    return t[(t["verdict"] == SLOWER) & (t["ratio"] > 1 + limit)]
