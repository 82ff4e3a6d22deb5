"""The attention experiment's part of the report: peak memory and time against N (log-log, with the N and
N² slopes drawn), time over FlashAttention's block sizes, and the counted traffic against the formulas."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from experiments.attention.schema import KEY
from experiments.framework.spec import Report
from experiments.reporting.plotting import mark_unstable, save_figure, theme
from experiments.reporting.tables import markdown_table

IMPL, N, PHASE, BQ, BK = f"{KEY}.impl", f"{KEY}.seq_len", f"{KEY}.phase", f"{KEY}.block_q", f"{KEY}.block_k"


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    if "peak_bytes" not in df:
        return df[:0]
    ok = df[(df["status"] == "ok") & df["peak_bytes"].notna()].copy()
    ok["series"] = ok[IMPL] + ", " + ok[PHASE] if PHASE in ok else ok[IMPL]
    return ok


def _slopes(ax: plt.Axes, ok: pd.DataFrame, y: str) -> None:
    """Dotted N and N² lines through the smallest N of the series."""
    first = ok.sort_values(N).iloc[0]
    xs = np.array(sorted(ok[N].unique()), dtype=float)
    for power, label in ((1, "∝ N"), (2, "∝ N²")):
        ax.plot(xs, first[y] * (xs / first[N]) ** power, ":", color="gray", lw=1.5)
        ax.annotate(label, (xs[-1], first[y] * (xs[-1] / first[N]) ** power), fontsize=11, color="gray")


def scaling(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    ok = _ok(df)
    if ok.empty or ok[N].nunique() < 2:
        return []
    theme()
    fig, (mem, tim) = plt.subplots(1, 2, figsize=(17, 7))
    sns.lineplot(ok, x=N, y="peak_bytes", hue="series", marker="o", ax=mem, errorbar=None)
    _slopes(mem, ok, "peak_bytes")
    mem.set(xscale="log", yscale="log", xlabel="N (tokens)", ylabel="peak bytes (tracemalloc)",
            title="Peak memory of one call")
    sns.lineplot(ok, x=N, y="time_median_s", hue="series", marker="o", ax=tim, errorbar=None)
    _slopes(tim, ok, "time_median_s")
    mark_unstable(tim, ok, N, "time_median_s")
    tim.set(xscale="log", yscale="log", xlabel="N (tokens)", ylabel="median time (s)", title="Time of one call")
    return [("Memory and time against N", save_figure(fig, out / "attention_scaling.png"))]


def blocks(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    ok = _ok(df)
    flash = ok[(ok[IMPL] == "flash") & ok[BQ].notna()] if BQ in ok else ok[:0]
    if flash.empty:
        return []
    n = flash[N].mode().iloc[0]
    grid = flash[flash[N] == n].pivot_table(index=BQ, columns=BK, values="time_median_s", aggfunc="median")
    if grid.shape[0] < 2 or grid.shape[1] < 2:
        return []
    grid.index, grid.columns = grid.index.astype(int), grid.columns.astype(int)
    theme()
    fig, ax = plt.subplots(figsize=(10, 8))
    sns.heatmap(1e3 * grid, annot=True, fmt=".0f", cmap="viridis_r", ax=ax, cbar_kws={"label": "ms"})
    ax.set(xlabel="block_k", ylabel="block_q", title=f"FlashAttention time over block sizes, N = {int(n)}")
    return [("Time over block sizes", save_figure(fig, out / "attention_blocks.png"))]


def traffic(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    """Counted traffic against N, and its ratio to the paper's formula: constant as N grows (the Θ holds)."""
    ok = _ok(df)
    if ok.empty:
        return []
    blocks_of = ok[BQ].fillna(0).astype(int).astype(str) + "×" + ok[BK].fillna(0).astype(int).astype(str) \
        if BQ in ok else ""
    ok["line"] = ok["series"] + np.where(ok[IMPL] == "flash", ", blocks " + blocks_of, "")
    ok = ok[ok.groupby("line")[N].transform("nunique") > 1]  # lines over N (not the block grid at one N)
    if ok.empty:
        return []
    ok["counted / formula"] = ok["traffic_elements"] / ok["formula_elements"]
    theme()
    fig, (left, right) = plt.subplots(1, 2, figsize=(17, 7))
    sns.lineplot(ok, x=N, y="traffic_elements", hue="line", marker="o", ax=left, errorbar=None)
    _slopes(left, ok, "traffic_elements")
    left.set(xscale="log", yscale="log", xlabel="N (tokens)", ylabel="elements read + written (counted)",
             title="Slow-memory traffic")
    sns.lineplot(ok, x=N, y="counted / formula", hue="line", marker="o", ax=right, errorbar=None, legend=False)
    right.set(xscale="log", yscale="log", xlabel="N (tokens)", ylabel="counted / formula",
              title="Against Θ(N·d + N²) and Θ(N²·d²/M): the constant")
    return [("Traffic against the formulas", save_figure(fig, out / "attention_traffic.png"))]


def plots(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    return scaling(df, out) + blocks(df, out) + traffic(df, out)


def sections(df: pd.DataFrame) -> str:
    """Flash against naive at each N both ran, and the points refused over the memory budget."""
    lines = []
    ok = _ok(df)
    if not ok.empty and set(ok[IMPL]) >= {"naive", "flash"}:
        best = ok.groupby([IMPL, N])[["time_median_s", "peak_bytes", "traffic_elements"]].min()
        both = best.loc["naive"].join(best.loc["flash"], lsuffix="_naive", rsuffix="_flash", how="inner")
        if not both.empty:
            table = pd.DataFrame({
                "N": both.index, "speedup (naive / flash time)": both["time_median_s_naive"] /
                both["time_median_s_flash"], "memory ratio (naive / flash peak)": both["peak_bytes_naive"] /
                both["peak_bytes_flash"], "traffic ratio": both["traffic_elements_naive"] /
                both["traffic_elements_flash"]})
            lines += ["#### Flash against the dense form", "", markdown_table(table), ""]
    refused = df[(df["status"] == "failed") & df["error"].astype(str).str.contains("refused before allocating")]
    if not refused.empty:
        lines += ["Refused over the memory budget: " + "; ".join(refused["error"].astype(str)), ""]
    return "\n".join(lines)


REPORT = Report(
    headline=("time_median_s", "gflops", "pct_of_peak", "peak_bytes", "largest_intermediate_bytes",
              "traffic_elements", "formula_elements", "rel_err"),
    plots=plots,
    sections=sections,
)
