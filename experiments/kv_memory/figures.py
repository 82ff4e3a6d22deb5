"""The KV memory study's part of the report: where the reserved memory goes under each policy (token states,
reservation, internal fragmentation: the vLLM paper's Fig. 2 as stacked bars), and the memory parallel
samples save by sharing the prompt's blocks, against n."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from experiments.framework.spec import Report
from experiments.kv_memory.schema import KEY
from experiments.reporting.plotting import legend_below, save_figure, theme
from experiments.reporting.tables import markdown_table

DATASET = f"{KEY}.dataset"
PARTS = (("utilization_pct", "token states", "#2a9d8f"), ("reservation_pct", "reservation", "#e9c46a"),
         ("internal_frag_pct", "internal fragmentation", "#e76f51"))


def _policies(df: pd.DataFrame) -> pd.DataFrame:
    if "utilization_pct" not in df:
        return df[:0]
    ok = df[(df["status"] == "ok") & df["utilization_pct"].notna()].copy()
    ok["trace"] = ok[DATASET].astype(str) if DATASET in ok else "trace"
    ok["order"] = ok["variant"].map(lambda v: (v.startswith("paged"), int(v.split("/")[1]) if "/" in v else 0))
    return ok.sort_values(["trace", "order"])


def composition(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    """Stacked bars per policy and trace: the shares of the reserved memory, utilization written on top."""
    ok = _policies(df)
    if ok.empty:
        return []
    traces = list(ok["trace"].unique())
    theme()
    fig, axes = plt.subplots(1, len(traces), figsize=(max(10, 1.3 * ok["variant"].nunique() * len(traces)), 7),
                             squeeze=False, sharey=True)
    for ax, trace in zip(axes[0], traces, strict=True):
        part = ok[ok["trace"] == trace]
        bottom = pd.Series(0.0, index=part.index)
        for col, label, color in PARTS:
            ax.bar(part["variant"], part[col], bottom=bottom, label=label, color=color)
            bottom += part[col]
        for x, (_, row) in enumerate(part.iterrows()):
            ax.annotate(f"{row['utilization_pct']:.1f}%", (x, row["utilization_pct"]), ha="center", va="bottom",
                        fontsize=11, xytext=(0, 3), textcoords="offset points")
        ax.set(title=trace, xlabel="allocation policy", ylabel="% of reserved KV memory", ylim=(0, 105))
        ax.tick_params(axis="x", rotation=45)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle("Where reserved KV memory goes, time-averaged over the trace (utilization on each bar)")
    legend_below(fig, handles, labels, ncol=3, fontsize=12)
    return [("Reserved KV memory per policy", save_figure(fig, out / "kv_memory_policies.png"))]


def sharing(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    if "sharing_saved_pct" not in df:
        return []
    ok = df[(df["status"] == "ok") & df["sharing_saved_pct"].notna()].copy()
    if ok.empty:
        return []
    ok["trace"] = ok[DATASET].astype(str) if DATASET in ok else "trace"
    theme()
    fig, ax = plt.subplots(figsize=(10, 7))
    sns.lineplot(ok, x="samples", y="sharing_saved_pct", hue="trace", marker="o", ax=ax, errorbar=None)
    ax.set(xlabel="parallel samples per request (n)", ylabel="KV memory saved by sharing (%)",
           title="Sharing the prompt's blocks between samples (copy-on-write)")
    ax.set_xticks(sorted(ok["samples"].unique()))
    return [("Memory saved by sharing", save_figure(fig, out / "kv_memory_sharing.png"))]


def plots(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    return composition(df, out) + sharing(df, out)


def sections(df: pd.DataFrame) -> str:
    ok = _policies(df)
    if ok.empty:
        return ""
    table = ok[["trace", "variant", "utilization_pct", "reservation_pct", "internal_frag_pct", "external_frag_pct",
                "max_seqs", "preemptions"]]
    return "\n".join(["#### Utilization per policy", "", markdown_table(table.reset_index(drop=True)), ""])


REPORT = Report(
    headline=("utilization_pct", "reservation_pct", "internal_frag_pct", "external_frag_pct", "max_seqs",
              "sharing_saved_pct"),
    plots=plots,
    sections=sections,
)
