"""Report part of the matmul experiment: GFLOP/s against size, and the transformer-op table."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import NullFormatter

from experiments.plotting import save_figure, theme
from experiments.tables import markdown_table

HEADLINE = ["time_median_s", "gflops", "pct_of_peak", "intensity_flop_per_byte", "gb_per_s", "pct_of_roofline",
            "bound", "max_rel_err_vs_ref"]
OPS = ["qkv", "attn_out", "ffn_up", "ffn_down"]


def _label(df: pd.DataFrame) -> pd.Series:
    return df["matmul.dtype"] + ", " + df["blas_threads"].astype(str) + " thr, " + df["variant"]


def plots(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    square = df[(df["status"] == "ok") & (df["matmul.shape"] == "square")].copy()
    if square.empty:
        return []
    theme()
    square["series"] = _label(square)
    fig, ax = plt.subplots(figsize=(11, 6.5))
    sns.lineplot(square.sort_values("matmul.size"), x="matmul.size", y="gflops", hue="series", marker="o",
                 markersize=9, ax=ax)
    palette = dict(zip(square["series"].unique(), sns.color_palette(n_colors=square["series"].nunique()),
                       strict=True))
    for (dtype, threads), part in square.groupby(["matmul.dtype", "blas_threads"]):
        peak = part["peak_gflops"].iloc[0]
        color = palette[part["series"].iloc[0]]
        ax.axhline(peak, ls="--", lw=1.5, color=color)
        ax.annotate(f"measured peak, {dtype}, {threads} thr: {peak:.0f}", (square["matmul.size"].min(), peak),
                    fontsize=11, va="bottom", color=color)
    ax.set(xscale="log", xlabel="n (n×n×n product)", ylabel="GFLOP/s (2n³ / median time)",
           title="Square GEMM throughput against the machine's peak")
    sizes = sorted(int(v) for v in square["matmul.size"].unique())
    ax.set_xticks(sizes, [str(v) for v in sizes])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=11, title=None)
    return [("GFLOP/s vs size", save_figure(fig, out / "matmul_gflops_vs_size.png"))]


def sections(df: pd.DataFrame) -> str:
    ops = df[(df["status"] == "ok") & df["matmul.shape"].isin(OPS)].copy()
    if ops.empty:
        return ""
    ops["op"] = pd.Categorical(ops["matmul.shape"], OPS)
    ops["MFLOP"] = ops["flops"] / 1e6
    ops["MiB moved"] = ops["bytes_moved"] / 2**20
    cols = ["op", "matmul.d_model", "matmul.tokens", "variant", "m", "k", "n", "MFLOP", "MiB moved",
            "intensity_flop_per_byte", "ridge_point", "bound", "gflops", "pct_of_roofline"]
    table = ops.sort_values(["matmul.tokens", "op", "variant"])[cols]
    return "\n".join([
        "### The four products of a transformer layer",
        "",
        "`bound` compares each product's intensity (FLOP per byte moved) with the machine's ridge point "
        "(peak GFLOP/s ÷ memory GB/s): below it the memory roof limits the product. One token (decode) "
        "makes every product a GEMV at about 0.5 FLOP/byte in fp32; a 512-token prefill makes them GEMMs.",
        "",
        markdown_table(table),
        "",
    ])
