"""The matmul experiment's part of the report: GFLOP/s against size, the transformer-op table, roofline labels."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import NullFormatter

from experiments.framework.spec import Report
from experiments.matmul.schema import KEY, Shape
from experiments.reporting.plotting import mark_unstable, save_figure, theme
from experiments.reporting.tables import markdown_table

OPS = [s.value for s in Shape if s is not Shape.square]  # the products of a transformer layer
SHAPE, SIZE, TOKENS = f"{KEY}.shape", f"{KEY}.size", f"{KEY}.tokens"


def _label(df: pd.DataFrame) -> pd.Series:
    return df[f"{KEY}.dtype"] + ", " + df["blas_threads"].astype(int).astype(str) + " threads, " + df["variant"]


def plots(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    square = df[(df["status"] == "ok") & (df[SHAPE] == "square")].copy()
    if square.empty:
        return []
    theme()
    square["series"] = _label(square)
    fig, ax = plt.subplots(figsize=(11, 6.5))
    sns.lineplot(square.sort_values(SIZE), x=SIZE, y="gflops", hue="series", marker="o",
                 markersize=9, ax=ax)
    palette = dict(zip(square["series"].unique(), sns.color_palette(n_colors=square["series"].nunique()),
                       strict=True))
    for (dtype, threads), part in square.groupby([f"{KEY}.dtype", "blas_threads"]):
        peak = part["peak_gflops"].iloc[0]
        color = palette[part["series"].iloc[0]]
        ax.axhline(peak, ls="--", lw=1.5, color=color)
        ax.annotate(f"measured peak, {dtype}, {int(threads)} threads: {peak:.0f}", (square[SIZE].min(), peak),
                    fontsize=11, va="bottom", color=color)
    ax.set(xscale="log", xlabel="n (n×n×n product)", ylabel="GFLOP/s (2n³ / median time)",
           title="Square GEMM throughput against the machine's peak")
    sizes = sorted(int(v) for v in square[SIZE].unique())
    if len(sizes) <= 12:  # each size its own tick; more would overprint (and cost seconds to lay out)
        ax.set_xticks(sizes, [str(v) for v in sizes])
        ax.xaxis.set_minor_formatter(NullFormatter())
    mark_unstable(ax, square, SIZE, "gflops")
    ax.legend(fontsize=11, title=None)
    return [("GFLOP/s vs size", save_figure(fig, out / "matmul_gflops_vs_size.png"))]


def sections(df: pd.DataFrame) -> str:
    ops = df[(df["status"] == "ok") & df[SHAPE].isin(OPS)].copy()
    if ops.empty:
        return ""
    ops["op"] = pd.Categorical(ops[SHAPE], OPS)
    ops["MFLOP"] = ops["flops"] / 1e6
    ops["MiB moved"] = ops["bytes_moved"] / 2**20
    cols = ["op", f"{KEY}.d_model", TOKENS, "variant", "m", "k", "n", "MFLOP", "MiB moved",
            "intensity_flop_per_byte", "ridge_point", "bound", "gflops", "pct_of_roofline"]
    table = ops.sort_values([TOKENS, "op", "variant"])[cols]
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


def point_labels(df: pd.DataFrame) -> pd.Series:
    """Roofline labels for the decode GEMVs (fp32): the prefill GEMMs sit under the peak, unlabelled."""
    if SHAPE not in df or TOKENS not in df:
        return pd.Series(index=df.index, dtype=object)
    gemv = df[SHAPE].isin(OPS) & (df["variant"] == "fp32") & (df[TOKENS] == 1)
    return df.loc[gemv, SHAPE] + " (1 token)"


REPORT = Report(
    headline=("time_median_s", "gflops", "pct_of_peak", "intensity_flop_per_byte", "gb_per_s", "pct_of_roofline",
              "bound", "max_rel_err_vs_ref"),
    plots=plots,
    sections=sections,
    point_labels=point_labels,
)
