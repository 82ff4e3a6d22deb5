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
from experiments.reporting import drift
from experiments.reporting.differences import environment_changes, machine_roofs
from experiments.reporting.gather import knob_columns
from experiments.reporting.load import INCOMPLETE, ReportError
from experiments.reporting.stats import SLOWER, verdict
from experiments.reporting.sweeps import Sweep, as_text, point_samples
from experiments.reporting.timed import timed_lines


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
    knobs = df.reindex(columns=keys)
    named = knobs.apply(lambda row: ", ".join(f"{k}={as_text(v)}" for k, v in row.items() if not pd.isna(v)), axis=1)
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
    canary: dict[str, pd.DataFrame] = field(default_factory=dict)  # each sweep's drift canary series
    moved: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)  # (experiment, sweep) -> kernel ->
    # log of the canary's speed ratio to the first sweep's
    paired: bool = False  # the "sweeps" are settings of one sweep, measured side by side in each pass


def compare(sweeps: list[Sweep], experiments: Mapping[str, Experiment], threshold: float,
            normalize: str | None = None, paired: bool = False) -> Comparison:
    """Pair every later sweep's rows with the first's and compare them. ``normalize`` (``copy`` or ``sgemm``): each
    pass of a timed point divided by the canary's reading before it, instead of widening its interval by the
    machine's move. ``paired``: the sweeps are one sweep's settings (:func:`~experiments.reporting.sweeps.split`),
    their points' passes taken side by side, compared pass by pass."""
    base, lines, samples, exact, unmatched, settings, checked = sweeps[0], [], [], [], [], {}, 0
    left_out = left_out_of(sweeps)
    kernel = {name: c for c, (name, _) in drift.KERNELS.items()}.get(normalize or "")
    speed = float(base.canary[kernel].median()) if kernel and not base.canary.empty else 1.0
    times = [point_samples(s, kernel, speed) for s in sweeps]
    flagged = [drift.flags(s.canary, s.label, threshold) for s in sweeps]
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
        for i, (sweep, b, tb) in enumerate(zip(sweeps[1:], keyed[1:], times[1:], strict=True), 1):
            for point in a.index.symmetric_difference(b.index):
                unmatched.append({"experiment": name, "point": point,
                                  "only in": base.label if point in a.index else sweep.label})
            common = sorted(a.index.intersection(b.index), key=natural)
            for point, ra, rb in zip(common, a.loc[common].to_dict("records"), b.loc[common].to_dict("records"),
                                      strict=True):
                xa = times[0].get((str(ra["source"]), str(ra["variant"])), {})
                xb = tb.get((str(rb["source"]), str(rb["variant"])), {})
                measures = sorted(set(xa) & set(xb))
                off = [*flagged[0].get(str(ra["source"]), []), *flagged[i].get(str(rb["source"]), [])]
                gap = drift.gap_s(base.canary, sweep.canary, str(ra["source"]), str(rb["source"])) if measures else 0.0
                for measure in measures:
                    lines.append({"experiment": name, "point": point, "measure": measure, "sweep": sweep.label,
                                  "machine_off": "; ".join(off), "gap_s": gap})
                    samples.append((xa[measure], xb[measure]))
                for col in (c for c in exact_cols if c in ra and c in rb):
                    checked += 1
                    va, vb = ra[col], rb[col]
                    if not (pd.isna(va) and pd.isna(vb)) and str(va) != str(vb):
                        exact.append({"experiment": name, "point": point, "sweep": sweep.label, "column": col,
                                      base.label: va, "value": vb})
    moved = {(name, s.label): {} if kernel or paired else drift.shift(base.canary, s.canary, name)
             for name in settings for s in sweeps[1:]}
    if not lines and checked == 0:
        raise ReportError("nothing to compare: no experiment has complete (ok) points in every sweep"
                          + "".join(f"\n  {s}" for s in left_out))
    return Comparison([s.label for s in sweeps], environment_changes(sweeps), machine_roofs(sweeps), settings,
                      timed_lines(lines, samples, threshold, drift.prior([s.canary for s in sweeps]), moved, paired),
                      pd.DataFrame(exact), checked, pd.DataFrame(unmatched, columns=["experiment", "point", "only in"]),
                      left_out, {s.label: s.canary for s in sweeps}, moved, paired)


def left_out_of(sweeps: list[Sweep]) -> list[str]:
    """The files no sweep could read and the points no manifest vouches for, one line each."""
    out = [f"{s.label}: {problem}" for s in sweeps for problem in s.problems]
    for s in sweeps:
        bad = s.rows[s.rows["status"] == INCOMPLETE].drop_duplicates("source")
        out += [f"{s.label}: {row.get('source')}: {row.get('error')}" for row in bad.to_dict("records")]
    return out


def regressions(result: Comparison, limit: float) -> pd.DataFrame:
    """Timed lines *slower* at ``limit`` (0.10: 10%): their whole interval lies above 1 + limit."""
    t = result.timed
    if t.empty:
        return t
    return t[[verdict(lo, hi, limit) == SLOWER for lo, hi in zip(t["ratio_low"], t["ratio_high"], strict=True)]]
