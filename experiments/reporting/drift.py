"""The drift canary in a report and in a comparison: the machine's speed over a sweep, how far it strayed from its
median, the variance it gives a comparison of one-pass sweeps, and the points measured while it was off."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from experiments.framework.store import CANARY
from experiments.reporting.load import read_tables
from experiments.reporting.plotting import save_figure, theme
from experiments.reporting.tables import markdown_table

KERNELS = {"copy_gbps": ("copy", "GB/s"), "sgemm_gflops": ("sgemm", "GFLOP/s")}
FIGURE = "canary_over_time.png"


def series(canary: pd.DataFrame) -> pd.DataFrame:
    """Canary readings in time order, numbers as numbers, ``seconds`` since the first, and each kernel's reading
    relative to the median of its experiment's readings in the sweep (``copy_rel``, ``sgemm_rel``: 0.1 is 10%
    faster; a folder of several sweeps, as the demo's, holds one per experiment)."""
    if canary.empty or "at_utc" not in canary:
        return pd.DataFrame()
    out = canary.assign(at=pd.to_datetime(canary["at_utc"], utc=True, errors="coerce"),
                        **{c: pd.to_numeric(canary[c], errors="coerce") for c in ("pass", *KERNELS)})
    out = out.dropna(subset=["at", *KERNELS]).sort_values("at").reset_index(drop=True)
    if out.empty:
        return out
    group = out["experiment"] if "experiment" in out else pd.Series("", index=out.index)
    rel = {f"{name}_rel": out[col] / out.groupby(group)[col].transform("median") - 1
           for col, (name, _) in KERNELS.items()}
    return out.assign(seconds=(out["at"] - out["at"].iloc[0]).dt.total_seconds(), **rel)


def read_series(results: list[Path]) -> pd.DataFrame:
    """The canary series of the job folders of these ``results.csv`` files."""
    return series(read_tables([p.parent / CANARY for p in results if (p.parent / CANARY).exists()]))


def summary(named: dict[str, pd.DataFrame], threshold: float) -> pd.DataFrame:
    """Per sweep and kernel: readings, minutes covered, median, lowest and highest reading against the median, and
    the share of readings off it by more than ``threshold``."""
    rows = []
    for label, s in named.items():
        for col, (name, unit) in KERNELS.items():
            if s.empty:
                continue
            rel = s[f"{name}_rel"]
            rows.append({"sweep": label, "canary": f"{name} ({unit})", "readings": len(s),
                         "minutes": round(float(s["seconds"].iloc[-1]) / 60, 1),
                         "median": round(float(s[col].median()), 1),
                         "lowest": f"{100 * rel.min():+.0f}%", "highest": f"{100 * rel.max():+.0f}%",
                         f"off by > {100 * threshold:g}%": f"{100 * float((rel.abs() > threshold).mean()):.0f}%"})
    return pd.DataFrame(rows)


def prior(named: list[pd.DataFrame]) -> tuple[float, float] | None:
    """The between-pass variance the canaries saw, for sweeps of one pass per point: the larger kernel's variance of
    log speed, pooled over the sweeps, with its degrees of freedom; None when a sweep has fewer than two readings."""
    if any(len(s) < 2 for s in named):
        return None
    best = (0.0, 0.0)
    for col in KERNELS:
        ss = sum(float(((np.log(s[col]) - np.log(s[col]).mean()) ** 2).sum()) for s in named)
        df = sum(len(s) - 1 for s in named)
        best = max(best, (ss / df, float(df)))
    return best


def shift(a: pd.DataFrame, b: pd.DataFrame, experiment: str) -> dict[str, float]:
    """How much faster the machine was while sweep ``b`` measured ``experiment`` than while ``a`` did, by each canary
    kernel: log(median b / median a) (empty when either has no reading)."""
    a, b = (s[s["experiment"] == experiment] if "experiment" in s else s for s in (a, b))
    if a.empty or b.empty:
        return {}
    return {name: float(np.log(b[col].median() / a[col].median())) for col, (name, _) in KERNELS.items()}


def widen(low: float, high: float, moved: dict[str, float]) -> tuple[float, float]:
    """A time ratio's interval widened by the machine's own move between the sweeps. A point whose speed follows a
    canary kernel with a sensitivity k between 0 and 1 changed by ratio · speed ratio^k through its code: with k
    unknown, the interval spans every k (a machine 8% slower in B lowers the low end by 8%)."""
    if not moved:
        return low, high
    return low * float(np.exp(min(0.0, *moved.values()))), high * float(np.exp(max(0.0, *moved.values())))


def gap_s(a: pd.DataFrame, b: pd.DataFrame, source_a: str, source_b: str) -> float:
    """The median time [s] between the starts of the same pass of two points (by their canary readings; NaN
    without them): how close side by side they were measured."""
    if a.empty or b.empty:
        return float("nan")
    ta, tb = (s[s["source"] == src].drop_duplicates("pass").set_index("pass")["at"]
              for s, src in ((a, source_a), (b, source_b)))
    both = ta.index.intersection(tb.index)
    return float(np.median(np.abs((tb[both] - ta[both]).dt.total_seconds()))) if len(both) else float("nan")


def step_s(named: list[pd.DataFrame]) -> float:
    """The median time [s] from one pass's start to the next one's in the sweep these series come from (NaN with
    fewer than two readings): how far apart two neighbours in the sweep's order run."""
    at = pd.concat([s for s in named if not s.empty] or [pd.DataFrame({"at": []})])["at"].sort_values()
    return float(at.diff().dt.total_seconds().median()) if len(at) > 1 else float("nan")


def flags(s: pd.DataFrame, label: str, threshold: float) -> dict[str, list[str]]:
    """Job folder -> its passes measured while a canary kernel was off the sweep's median by more than the
    threshold, in words (``b pass 2: copy -14%``)."""
    out: dict[str, list[str]] = {}
    for row in s.to_dict("records") if not s.empty else []:
        off = [f"{name} {100 * row[f'{name}_rel']:+.0f}%" for name, _ in KERNELS.values()
               if abs(row[f"{name}_rel"]) > threshold]
        if off:
            out.setdefault(str(row["source"]), []).append(f"{label} pass {int(row['pass'])}: {', '.join(off)}")
    return out


def figure(named: dict[str, pd.DataFrame], threshold: float, out: Path) -> Path | None:
    """Each kernel's reading against its sweep's median over the sweep, one line per sweep, the ±threshold band."""
    named = {k: s for k, s in named.items() if not s.empty}
    if not named:
        return None
    theme()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    for ax, (col, (name, unit)) in zip(axes, KERNELS.items(), strict=True):
        ax.axhspan(-100 * threshold, 100 * threshold, color="#e9ecef", zorder=0,
                   label=f"within ±{100 * threshold:g}% of the median")
        for label, s in named.items():
            median = float(s[col].median())
            ax.plot(s["seconds"] / 60, 100 * s[f"{name}_rel"], marker="o", ms=3, lw=1,
                    label=f"{label} (median {median:.1f} {unit})")
        ax.axhline(0, color="gray", lw=1)
        ax.set(title=f"the drift canary: {name}", xlabel="minutes since the first reading")
        ax.legend(fontsize=9, loc="best")
    axes[0].set_ylabel("reading against its sweep's median (%)")
    return save_figure(fig, out / FIGURE)


def section(results: list[Path], out: Path, threshold: float = 0.10) -> str:
    """The report's section on the machine during the sweep (empty when no point took a canary reading)."""
    s = read_series(results)
    if s.empty:
        return ""
    plot = figure({"this sweep": s}, threshold, out)
    table = summary({"this sweep": s}, threshold).drop(columns="sweep")
    return "\n".join([
        "## The machine during the sweep", "",
        f"Each timed point read the drift canary before each of its passes ({len(s)} readings): a 64 MiB copy and a "
        "512×512 sgemm, about 50 ms. A point measured while the canary was far from its median was measured on a "
        "faster or slower machine, whatever the code did; `sweep.rounds` spreads each point's passes over the sweep, "
        "and `report.py compare` flags such points.", "", markdown_table(table), "",
        *([f"![The machine during the sweep]({plot.name})", ""] if plot else [])])
