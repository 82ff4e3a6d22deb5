"""The batching experiment's part of the report: output throughput against p99 latency for static and continuous
batching, one point per arrival rate (measured solid, cost model dashed), measured against modeled throughput
per point, and the continuous / static ratio at each rate."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from experiments.batching.schema import KEY
from experiments.framework.spec import Report
from experiments.reporting.plotting import label_points, save_figure, theme
from experiments.reporting.tables import markdown_table

POLICY, COST, RATE = f"{KEY}.policy", f"{KEY}.cost", f"{KEY}.rate"


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    if "output_throughput" not in df or POLICY not in df:
        return df[:0]
    ok = df[(df["status"] == "ok") & df["output_throughput"].notna()].copy()
    rate = ok[RATE] if RATE in ok else pd.Series(np.nan, index=ok.index)
    ok["load"] = rate.map(lambda r: "all at once" if pd.isna(r) or np.isinf(float(r)) else f"{float(r):g}/s")
    ok["order"] = rate.astype(float).fillna(np.inf)
    ok[COST] = ok[COST] if COST in ok else "measured"
    return ok.sort_values("order")


def curve(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    ok = _ok(df)
    if ok.empty:
        return []
    theme()
    fig, axes = plt.subplots(1, 2, figsize=(17, 7), sharey=True)
    colors = dict(zip(sorted(ok[POLICY].unique()), sns.color_palette(n_colors=ok[POLICY].nunique()), strict=True))
    labels = []
    for ax, latency, title in ((axes[0], "p99_ttft_ms", "p99 time to first token"),
                               (axes[1], "p99_e2e_ms", "p99 end-to-end latency")):
        points = []
        for (policy, cost), part in ok.groupby([POLICY, COST]):
            ax.plot(part[latency], part["output_throughput"], "o-" if cost == "measured" else "s--",
                    color=colors[policy], alpha=1 if cost == "measured" else 0.6, label=f"{policy}, {cost}")
            if cost == "measured":
                points += [(r[latency], r["output_throughput"], r["load"]) for _, r in part.iterrows()]
        ax.set(xscale="log", xlabel=f"{title} (ms)", ylabel="output tokens/s", title=title)
        labels.append((ax, points))
    axes[0].legend(fontsize=11)
    fig.suptitle("Throughput against latency, one point per arrival rate (measured solid, cost model dashed)")
    for ax, points in labels:  # two policies at one load can land on one spot: each label where it is clear
        label_points(ax, points)
    return [("Throughput against p99 latency", save_figure(fig, out / "batching_throughput_latency.png"))]


def _paired(ok: pd.DataFrame) -> pd.DataFrame:
    """Measured and modeled throughput of the same (policy, load)."""
    both = ok.pivot_table(index=[POLICY, "load", "order"], columns=COST, values="output_throughput", aggfunc="median")
    if not {"measured", "model"} <= set(both.columns):
        return both[:0]
    both = both.dropna().reset_index().sort_values(["order", POLICY])
    both["model / measured"] = both["model"] / both["measured"]
    return both


def model_vs_measured(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    both = _paired(_ok(df))
    if both.empty:
        return []
    theme()
    long = both.melt(id_vars=[POLICY, "load"], value_vars=["measured", "model"], var_name="cost", value_name="tok/s")
    long["point"] = long[POLICY] + "\n" + long["load"]
    fig, ax = plt.subplots(figsize=(max(10, 1.4 * long["point"].nunique()), 7))
    sns.barplot(long, x="point", y="tok/s", hue="cost", ax=ax)
    ax.set(xlabel="", ylabel="output tokens/s", title="Measured throughput and the cost model's prediction")
    return [("Cost model against measurement", save_figure(fig, out / "batching_model_vs_measured.png"))]


def plots(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    return curve(df, out) + model_vs_measured(df, out)


def sections(df: pd.DataFrame) -> str:
    ok = _ok(df)
    lines = []
    measured = ok[ok[COST] == "measured"]
    if {"static", "continuous"} <= set(measured[POLICY]):
        m = measured.pivot_table(index=["order", "load"], columns=POLICY,
                                 values=["output_throughput", "p99_ttft_ms"], aggfunc="median").dropna()
        if not m.empty:
            table = pd.DataFrame({
                "load": m.index.get_level_values("load"),
                "continuous / static throughput": (m["output_throughput"]["continuous"]
                                                   / m["output_throughput"]["static"]).to_numpy(),
                "p99 TTFT continuous (ms)": m["p99_ttft_ms"]["continuous"].to_numpy(),
                "p99 TTFT static (ms)": m["p99_ttft_ms"]["static"].to_numpy()})
            lines += ["#### Continuous against static batching (measured)", "", markdown_table(table), ""]
    both = _paired(ok)
    if not both.empty:
        lines += ["#### Cost model against measurement", "",
                  markdown_table(both[[POLICY, "load", "measured", "model", "model / measured"]]), ""]
    return "\n".join(lines)


REPORT = Report(
    headline=("output_throughput", "median_ttft_ms", "p99_ttft_ms", "p99_tpot_ms", "p99_e2e_ms", "mean_batch",
              "preemptions", "max_rel_err"),
    plots=plots,
    sections=sections,
)
