"""The report's roofline: every measured point that reports FLOPs and bytes, under this machine's roofs."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from experiments.reporting.plotting import save_figure, theme
from infer_core.measure.machine import MachineFileError, cached_entries

NEEDED = ("flops", "bytes_moved", "gflops")


def roofs(machine_file: Path) -> pd.DataFrame:
    """One row per BLAS thread count among the cached machine references: sgemm and dgemm peaks, memory roof,
    from the newest measurement at that count (an older one, from other library versions or kernels, is
    superseded)."""
    rows = []
    for entry in cached_entries(machine_file):
        key, ref = entry["key"], entry["ref"]
        bandwidth = max(ref.get("copy_gbps", 0.0), ref.get("read_gbps", 0.0))
        rows.append({"blas_threads": key.get("blas_threads"), "cpu": key.get("cpu"), "sgemm": ref["sgemm_gflops"],
                     "dgemm": ref["dgemm_gflops"], "bandwidth": bandwidth, "measured": ref.get("measured_utc", "")})
    if not rows:
        return pd.DataFrame(rows)
    newest = pd.DataFrame(rows).sort_values("measured", kind="stable").drop_duplicates("blas_threads", keep="last")
    return newest.drop(columns="measured").sort_values("blas_threads").reset_index(drop=True)


#: A point this far above its roof means the roof is wrong (a stale or foreign machine reference).
ROOF_TOLERANCE = 1.10


def above_roof(pts: pd.DataFrame, machine: pd.DataFrame) -> pd.DataFrame:
    """The points whose GFLOP/s pass ``ROOF_TOLERANCE`` × the roof at their own BLAS thread count."""
    left = pts.dropna(subset=["blas_threads"]).astype({"blas_threads": int})
    roofs = left.merge(machine.astype({"blas_threads": int}), on="blas_threads", how="inner", suffixes=("", "_roof"))
    attainable = np.minimum(roofs["sgemm"], roofs["intensity"] * roofs["bandwidth"])
    return roofs[roofs["gflops"] > ROOF_TOLERANCE * attainable]


def join_labels(texts: list[str]) -> str:
    """Labels sharing a point's place as one: "qkv, ffn_up (1 token)" for "qkv (1 token)" and "ffn_up (1 token)"."""
    tails = {t[t.rfind(" ("):] if t.endswith(")") and " (" in t else "" for t in texts}
    if len(texts) > 1 and len(tails) == 1 and (tail := tails.pop()):
        return ", ".join(t[:-len(tail)] for t in texts) + tail
    return ", ".join(texts)


def section(df: pd.DataFrame, out: Path, machine_file: Path, labels: pd.Series | None = None) -> str:
    """A roofline chart of all points with FLOPs and bytes, or a note saying what is missing.

    ``labels`` (indexed like ``df``) names the points worth a label on the chart."""
    if not all(c in df for c in NEEDED):
        return ""
    pts = df[(df["status"] == "ok")].dropna(subset=list(NEEDED)).copy()
    pts = pts[(pts["bytes_moved"] > 0) & (pts["gflops"] > 0)]
    if pts.empty:
        return ""
    lines = ["## Roofline", ""]
    try:
        machine = roofs(machine_file)
    except MachineFileError as exc:
        return "\n".join([*lines, f"No roofline: {exc}", ""])
    if machine.empty:
        return "\n".join([*lines, f"No machine reference in `{machine_file}`: run "
                          "`python experiments/run.py experiment=machine` to measure one.", ""])
    threads = set(pts["blas_threads"].dropna().astype(int))
    shown = machine[machine["blas_threads"].isin(threads)] if threads & set(machine["blas_threads"]) else machine
    pts["intensity"] = pts["flops"] / pts["bytes_moved"]
    theme()
    fig, ax = plt.subplots(figsize=(12, 7.5))
    ridge_max = (shown["sgemm"] / shown["bandwidth"]).max()
    lo, hi = pts["intensity"].min() / 3, max(pts["intensity"].max(), ridge_max) * 3
    grid = np.geomspace(lo, hi, 200)
    greys = np.linspace(0.1, 0.55, len(shown))  # a shade per thread count, darkest for the most threads
    for grey, row in zip(greys, shown.sort_values("blas_threads", ascending=False).itertuples(index=False),
                         strict=True):
        for peak, ls, text in ((row.sgemm, "-", f"sgemm {row.sgemm:.0f} GFLOP/s, memory {row.bandwidth:.0f} GB/s"),
                               (row.dgemm, ":", f"dgemm {row.dgemm:.0f} GFLOP/s")):
            ax.plot(grid, np.minimum(peak, grid * row.bandwidth), color=str(grey), ls=ls, lw=1.8,
                    label=f"roof, {int(row.blas_threads)} threads: {text}")
    # an experiment with a few variants gets a colour per variant; one with many, one colour
    few = pts.groupby("experiment")["variant"].transform("nunique") <= 4
    pts["series"] = pts["experiment"].where(~few, pts["experiment"] + ": " + pts["variant"].astype(str))
    sns.scatterplot(pts, x="intensity", y="gflops", hue="series", style="experiment", s=80, ax=ax)
    if labels is not None:  # points within 15% in intensity and 50% in GFLOP/s (labels would touch) share one
        named = pts.loc[labels.dropna().index.intersection(pts.index)].assign(text=labels)
        named = named.sort_values("intensity")
        groups: list[list] = []
        for idx, row in named.iterrows():
            near = bool(groups) and any(all(abs(np.log(row[c] / named.at[j, c])) < np.log(f)
                                            for c, f in (("intensity", 1.15), ("gflops", 1.5))) for j in groups[-1])
            groups[-1].append(idx) if near else groups.append([idx])
        for i, group in enumerate(groups):
            text = join_labels(list(dict.fromkeys(str(named.at[j, "text"]) for j in group)))
            ax.annotate(text, (named.at[group[0], "intensity"], named.at[group[0], "gflops"]), fontsize=9,
                        xytext=(6, 8 if i % 2 else -14), textcoords="offset points", color="0.3")
    above = above_roof(pts, shown)
    if len(above):
        ax.scatter(above["intensity"], above["gflops"], s=300, facecolors="none", edgecolors="crimson", lw=2,
                   label="above its roof: stale machine reference?")
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity [FLOP / byte moved]", ylabel="GFLOP/s",
           title="Roofline: attainable = min(peak, intensity × bandwidth)")
    ax.legend(title=None, fontsize=10, loc="lower right")
    path = save_figure(fig, out / "roofline.png")
    ridge = ", ".join(f"{int(r.blas_threads)} threads: {r.sgemm / r.bandwidth:.1f} FLOP/B"
                      for r in shown.itertuples(index=False))
    point_threads = ", ".join(str(t) for t in sorted(threads)) or "unknown"
    roof_threads = ", ".join(str(t) for t in sorted(shown["blas_threads"]))
    if len(above):
        threads = ", ".join(str(int(t)) for t in sorted(above["blas_threads"].dropna().unique()))
        lines += [f"**Warning: {len(above)} point(s) lie more than 10% above their roof** ("
                  + ", ".join(f"{r.experiment} {r.variant} {r.gflops:.1f} GFLOP/s" for r in above.itertuples())
                  + f"). The machine reference in `{machine_file}` is stale or from another machine: re-measure it "
                  f"with `python experiments/run.py experiment=machine bench.threads={threads}`.", ""]
    lines += [
        f"{len(pts)} measured point(s) from {', '.join(sorted(pts['experiment'].unique()))}, measured with "
        f"{point_threads} BLAS thread(s); roofs for {roof_threads} thread(s) from "
        f"`{machine_file}` (solid: sgemm peak, dotted: dgemm peak). Ridge point (fp32) {ridge}: kernels left "
        "of it are bound by memory, not by arithmetic.",
        "",
        f"![Roofline]({path.name})",
        "",
    ]
    return "\n".join(lines)
