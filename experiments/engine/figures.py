"""The engine experiment's part of the report: speed against size and fidelity (the Pareto plot), tg
bandwidth against the roofline, speed against depth per KV cache type, and a llama-bench table."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from experiments.engine.schema import KEY
from experiments.framework.spec import Report
from experiments.reporting.plotting import mark_unstable, save_figure, theme
from experiments.reporting.tables import markdown_table

BACKEND, WEIGHTS, MODEL, THREADS = f"{KEY}.backend", f"{KEY}.weights", f"{KEY}.model", f"{KEY}.threads"
DEPTH, TYPE_K, TYPE_V, FA = f"{KEY}.depth", f"{KEY}.type_k", f"{KEY}.type_v", f"{KEY}.flash_attn"


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    ok = df[(df["status"] == "ok") & df["test"].notna()].copy()
    if ok.empty:
        return ok
    ok["engine"] = ok[BACKEND].fillna("llamacpp") + ", " + ok["n_threads"].astype(int).astype(str) + " threads"
    ok["weights"] = ok[WEIGHTS].fillna("file") if WEIGHTS in ok else "file"
    return ok


def pareto(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    """t/s against bits per weight, and tg t/s against the KL divergence from the f32 model."""
    ok = _ok(df)
    if ok.empty or ok["weights"].nunique() < 2:
        return []
    theme()
    fig, (left, right) = plt.subplots(1, 2, figsize=(17, 7))
    ok["series"] = ok["test"] + ", " + ok["engine"]
    sns.lineplot(ok.sort_values("bits_per_weight"), x="bits_per_weight", y="tokens_per_s", hue="series",
                 marker="o", markersize=9, ax=left, errorbar=None)
    for i, (_, row) in enumerate(ok[ok["test"] == "tg"].sort_values("bits_per_weight").iterrows()):
        left.annotate(row["weights"], (row["bits_per_weight"], row["tokens_per_s"]), fontsize=10,
                      xytext=(4, 6 if i % 2 else -14), textcoords="offset points")  # neighbours above and below
    mark_unstable(left, ok, "bits_per_weight", "tokens_per_s")
    left.set(yscale="log", xlabel="bits per weight (file)", ylabel="tokens/s (median)", title="Speed vs size")
    left.tick_params(axis="y", which="minor", labelsize=11)  # matplotlib chooses the labelled ticks, plain numbers
    tg = ok[(ok["test"] == "tg") & ok["mean_kld_vs_f32"].notna()].copy() if "mean_kld_vs_f32" in ok else ok[:0]
    if not tg.empty:
        floor = max(float(tg["mean_kld_vs_f32"][tg["mean_kld_vs_f32"] > 0].min()) / 2, 1e-7) \
            if (tg["mean_kld_vs_f32"] > 0).any() else 1e-7
        tg["kld"] = tg["mean_kld_vs_f32"].clip(lower=floor)  # f32 itself: drawn at the axis floor
        for engine, part in tg.groupby("engine"):
            part = part.sort_values("kld")
            right.scatter(part["kld"], part["tokens_per_s"], s=90, label=engine)
            front = part[part["tokens_per_s"] >= part["tokens_per_s"].cummax()]  # faster than every better file
            right.plot(front["kld"], front["tokens_per_s"], ls="--", lw=1.5, alpha=0.7)
            for _, row in part.iterrows():
                right.annotate(row["weights"], (row["kld"], row["tokens_per_s"]), fontsize=10, xytext=(4, 4),
                               textcoords="offset points")
        right.set(xscale="log", xlabel="mean KL divergence from the f32 model [nats] (less is better)",
                  ylabel="tg tokens/s", title="Speed vs fidelity (dashed: the Pareto front)")
        right.legend(fontsize=11)
    else:
        right.set_visible(False)
    fig.suptitle(f"{', '.join(ok[MODEL].dropna().unique()) if MODEL in ok else 'model'}: tokens/s by weight type")
    return [("Speed vs bits per weight and vs KL divergence", save_figure(fig, out / "engine_pareto.png"))]


def bandwidth(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    """tg GB/s per file and engine against the machine's read bandwidth."""
    ok = _ok(df)
    tg = ok[ok["test"] == "tg"] if not ok.empty else ok
    if tg.empty or "gb_per_s" not in tg:
        return []
    theme()
    tg = tg.sort_values("bits_per_weight")
    one_engine = tg["engine"].nunique() == 1
    tg["label"] = tg["weights"] if one_engine else tg["weights"] + "\n" + tg["engine"]
    fig, ax = plt.subplots(figsize=(max(9, (1.1 if one_engine else 1.8) * len(tg)), 7))
    bars = ax.bar(tg["label"], tg["gb_per_s"], color=sns.color_palette()[0])
    for bar, pct in zip(bars, tg["pct_of_bandwidth"], strict=True):
        ax.annotate(f"{pct:.0f}%", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    va="bottom", fontsize=11)
    for threads, roof in tg.groupby("n_threads")["bandwidth_gbps"].first().items():
        ax.axhline(roof, ls="--", lw=1.5, color="crimson")
        ax.annotate(f"measured read bandwidth, {int(threads)} threads: {roof:.1f} GB/s", (-0.4, roof), fontsize=11,
                    va="bottom", color="crimson")
    ax.set(ylabel="GB/s (bytes read per token × tokens/s)", xlabel=f"weights ({tg['engine'].iloc[0]})" if one_engine
           else "", title="Generation against the memory roof: tg GB/s (% of the read bandwidth)")
    ax.tick_params(axis="x", labelsize=11)
    return [("tg bandwidth against the roofline", save_figure(fig, out / "engine_tg_bandwidth.png"))]


def depth(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    """t/s against the tokens already cached, per KV cache type and flash attention."""
    ok = _ok(df)
    if ok.empty or DEPTH not in ok or ok[DEPTH].nunique() < 2:
        return []
    theme()
    ok["cache"] = ok[TYPE_K].fillna("f32") + "/" + ok[TYPE_V].fillna("f32") + np.where(
        ok[FA].fillna(False).astype(bool), ", fa", "")
    tests = sorted(ok["test"].unique())
    fig, axes = plt.subplots(1, len(tests), figsize=(8.5 * len(tests), 7), squeeze=False)
    for ax, test in zip(axes[0], tests, strict=True):
        part = ok[ok["test"] == test].sort_values(DEPTH)
        sns.lineplot(part, x=DEPTH, y="tokens_per_s", hue="cache", style="engine", marker="o", markersize=9,
                     ax=ax, errorbar=None)
        ax.set(xlabel="depth: tokens already in the KV cache", ylabel="tokens/s", title=f"{test}")
        ax.legend(fontsize=10)
    fig.suptitle("Speed vs depth per KV cache type (K/V; fa: flash attention)")
    return [("Speed vs depth per KV cache type", save_figure(fig, out / "engine_depth.png"))]


def plots(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    return [*pareto(df, out), *bandwidth(df, out), *depth(df, out)]


def file_size(n_bytes: float) -> str:
    """A file's size as llama-bench prints it: MiB under 1 GiB, else GiB."""
    return f"{n_bytes / 2**20:.2f} MiB" if n_bytes < 2**30 else f"{n_bytes / 2**30:.2f} GiB"


def sections(df: pd.DataFrame) -> str:
    """llama-bench's table: model, size, params, backend, threads, test, t/s ± std."""
    ok = _ok(df)
    if ok.empty:
        return ""
    table = pd.DataFrame({
        "model": ok[MODEL].fillna("file") if MODEL in ok else "file", "weights": ok["weights"],
        "size": ok["file_bytes"].map(file_size),
        "params": (ok["n_params"] / 1e9).map(lambda v: f"{v:.2f} B"), "backend": ok[BACKEND],
        "threads": ok["n_threads"].astype(int),
        "test": ok["test"] + ok["n_tokens"].astype(int).astype(str) + np.where(
            ok[DEPTH].fillna(0) > 0, " @ d" + ok[DEPTH].fillna(0).astype(int).astype(str), ""),
        "t/s": ok["tokens_per_s"].map(lambda v: f"{v:.2f}") + " ± " + ok["tokens_per_s_std"].map(lambda v: f"{v:.2f}"),
    })
    return "\n".join(["### As llama-bench prints it", "", markdown_table(table), ""])


REPORT = Report(
    headline=("test", "tokens_per_s", "tokens_per_s_std", "bits_per_weight", "gb_per_s", "pct_of_bandwidth",
              "gflops", "mean_kld_vs_f32", "same_top_vs_f32", "max_rel_diff_vs_ref", "top1_agree_vs_ref"),
    plots=plots,
    sections=sections,
)
