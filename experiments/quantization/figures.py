"""The quantization experiment's part of the report: the classic demo's four panels, SQNR vs bits."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from experiments.framework.spec import Report
from experiments.quantization.schema import KEY
from experiments.reporting.plotting import save_figure, theme
from experiments.reporting.tables import markdown_table

DIST = f"{KEY}.distribution"


def _sidecar(ok: pd.DataFrame, stem: str) -> pd.DataFrame:
    """The ``<stem>.csv`` of every job in ``ok``, with each job's distribution attached."""
    frames = []
    for source, dist in ok[["source", DIST]].drop_duplicates().itertuples(index=False):
        path = Path(source) / f"{stem}.csv"
        if path.exists():
            frames.append(pd.read_csv(path).assign(distribution=dist))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _order(ok: pd.DataFrame) -> list[str]:
    """Methods from the most to the fewest bits per weight."""
    return list(ok.groupby("variant")["bits_per_weight"].mean().sort_values(ascending=False).index)


def plots(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return []
    theme()
    made = []
    pairs = _sidecar(ok, "pairs")
    order = _order(ok)
    palette = dict(zip(order, sns.color_palette("colorblind", len(order)), strict=False))

    if not pairs.empty:
        weights = pairs.drop_duplicates(["distribution", "row", "col"])
        fig, ax = plt.subplots(figsize=(10, 6))
        sns.histplot(weights, x="original", hue="distribution" if weights["distribution"].nunique() > 1 else None,
                     bins=100, element="step", stat="density", common_norm=False, ax=ax)
        ax.set(xlabel="weight value", title=f"Weight distribution (sample of {len(weights):,} weights)")
        made.append(("Weight histogram", save_figure(fig, out / "quant_weight_histogram.png")))

        g = sns.relplot(pairs, x="original", y="dequantized", col="variant", col_order=order, col_wrap=4,
                        hue="variant", palette=palette, legend=False, s=6, alpha=0.4, linewidth=0,
                        height=3.4, facet_kws={"sharex": True, "sharey": True})
        lo, hi = pairs["original"].min(), pairs["original"].max()
        for ax in g.axes.flat:
            ax.plot([lo, hi], [lo, hi], color="0.3", lw=0.8, ls="--")
        g.set_titles("{col_name}", size=12)
        g.figure.suptitle("Dequantized vs original weights", y=1.02)
        made.append(("Dequantized vs original", save_figure(g.figure, out / "quant_scatter.png")))

    channels = _sidecar(ok, "channel_errors")
    if not channels.empty:
        first = channels[channels["channel"] < 50]
        fig, ax = plt.subplots(figsize=(11, 6))
        present = [v for v in order if v in set(first["variant"])]
        sns.lineplot(first, x="channel", y="mae", hue="variant", hue_order=present,
                     palette=palette, style="distribution" if first["distribution"].nunique() > 1 else None, ax=ax)
        ax.set(yscale="log", xlabel="output channel (row of W)", ylabel="mean |w − ŵ|",
               title="Per-channel mean error, first 50 channels")
        ax.legend(fontsize=10, title=None, ncols=2)
        made.append(("Per-channel error", save_figure(fig, out / "quant_channel_error.png")))

    storage = ok.groupby("variant", as_index=False).agg(bytes=("bytes", "median"), bpw=("bits_per_weight", "median"))
    fp32 = int((ok[f"{KEY}.rows"] * ok[f"{KEY}.cols"]).max() * 4)
    storage = pd.concat([pd.DataFrame({"variant": ["fp32"], "bytes": [fp32], "bpw": [32.0]}), storage])
    storage = storage.sort_values("bytes", ascending=False)
    storage["KiB"] = storage["bytes"] / 2**10
    fig, ax = plt.subplots(figsize=(11, 6))
    sns.barplot(storage, y="variant", x="KiB", hue="variant", palette={**palette, "fp32": "0.5"}, legend=False, ax=ax)
    for i, row in enumerate(storage.itertuples(index=False)):
        ax.text(row.KiB, i, f" {row.KiB:,.0f} KiB, {row.bpw:.3g} bits/w", va="center", fontsize=11)
    ax.set(xlabel="storage [KiB] (codes + scales + zero points)", ylabel="",
           title=f"Storage of one {int(ok[f'{KEY}.rows'].max())}×{int(ok[f'{KEY}.cols'].max())} matrix",
           xlim=(0, fp32 / 2**10 * 1.45))
    made.append(("Storage", save_figure(fig, out / "quant_storage.png")))

    dists = sorted(ok[DIST].unique())
    fig, axes = plt.subplots(1, len(dists), figsize=(9 * len(dists), 6.5), squeeze=False, sharey=True)
    for ax, dist in zip(axes[0], dists, strict=True):
        part = ok[ok[DIST] == dist]
        sns.scatterplot(part, x="bits_per_weight", y="sqnr_db", hue="variant", palette=palette, s=90,
                        legend=False, ax=ax)
        for row in part.itertuples(index=False):
            ax.annotate(row.variant, (row.bits_per_weight, row.sqnr_db), fontsize=10, xytext=(5, 3),
                        textcoords="offset points")
        ax.set(xlabel="bits per weight (true storage)", ylabel="SQNR [dB]", title=f"{DIST}={dist}",
               xlim=(part["bits_per_weight"].min() - 0.5, part["bits_per_weight"].max() + 2.5))
    fig.suptitle("Reconstruction SQNR vs storage (≈ 6 dB per bit)")
    made.append(("SQNR vs bits per weight", save_figure(fig, out / "quant_sqnr_vs_bits.png")))
    return made


def sections(df: pd.DataFrame) -> str:
    """Best method per distribution at ≤ 4.5 and ≤ 8.5 bits per weight."""
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return ""
    rows = []
    for dist, part in ok.groupby(DIST):
        for budget in (4.5, 8.5):
            fit = part[part["bits_per_weight"] <= budget + 1e-9]
            if len(fit):
                best = fit.loc[fit["sqnr_db"].idxmax()]
                rows.append({"distribution": dist, "bits/weight budget": budget, "best method": best["variant"],
                             "bits_per_weight": best["bits_per_weight"], "sqnr_db": best["sqnr_db"]})
    if not rows:
        return ""
    return "\n".join(["### Best method within a storage budget", "", markdown_table(pd.DataFrame(rows)), ""])


REPORT = Report(
    headline=("bits_per_weight", "bytes", "compression_vs_fp32", "sqnr_db", "rel_l2", "max_abs_err", "cosine",
              "quantize_gb_per_s"),
    plots=plots,
    sections=sections,
)
