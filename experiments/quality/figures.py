"""The quality experiment's part of the report: perplexity and the comparison statistics as llama-perplexity prints
them, the Pareto figure of speed against quality with the choice a KLD budget gives, and KL divergence by position in
the context for each KV-cache type."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from experiments.framework.spec import Report
from experiments.reporting.plotting import label_points, legend_below, save_figure, theme
from experiments.reporting.tables import markdown_table


def _depth(df: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for source, variant in df[df["status"] == "ok"][["source", "variant"]].itertuples(index=False):
        path = Path(source) / "depth.csv"
        if path.exists():
            frames.append(pd.read_csv(path).assign(variant=variant))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


SPEEDS = {"tg_tokens_per_s": "tg: generated tokens/s", "pp_tokens_per_s": "pp: prompt tokens/s"}
QUALITIES = {"mean_kld": "mean KL divergence from the source [nats]", "ppl_ratio": "PPL / PPL(source)"}


def front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The points no other point beats on both axes (a lower ``x`` and a higher ``y``), by rising ``x``."""
    best, keep = -float("inf"), []
    for i, row in points.sort_values([x, y], ascending=[True, False]).iterrows():
        if row[y] > best:
            best = row[y]
            keep.append(i)
    return points.loc[keep]


def pareto(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    """Speed (pp, tg) against quality (mean KLD, PPL ratio): every choice of the report, the front drawn."""
    ok = df[df["status"] == "ok"]
    speeds = [c for c in SPEEDS if c in ok and ok[c].notna().any()]
    if len(ok) < 2 or not speeds:
        return []
    theme()
    fig, axes = plt.subplots(len(speeds), 2, figsize=(15, 6.5 * len(speeds)), squeeze=False)
    line = None
    for row, speed in zip(axes, speeds, strict=True):
        for ax, (quality, xlabel) in zip(row, QUALITIES.items(), strict=True):
            points = ok[[quality, speed, "variant"]].dropna()
            ax.scatter(points[quality], points[speed], s=60, zorder=3)
            best = front(points, quality, speed)
            (line,) = ax.step(best[quality], best[speed], where="post", color="tab:red", lw=1.5, alpha=0.7)
            if quality == "mean_kld":
                ax.set_xscale("symlog", linthresh=1e-3, linscale=0.5)
                ax.set_xlim(0, points[quality].max() * 3)  # room for the labels right of the last point
            else:
                ax.margins(x=0.15, y=0.1)
            ax.set(xlabel=xlabel, ylabel=SPEEDS[speed])
            label_points(ax, list(points[[quality, speed, "variant"]].itertuples(index=False, name=None)))
    legend_below(fig, [line], ["Pareto front: no other choice is both faster and closer to the source"], ncol=1)
    fig.suptitle("Speed against quality: each point a choice of weights × KV cache × flash attention", fontsize=15)
    return [("Speed against quality", save_figure(fig, out / "quality_pareto.png"))]


def plots(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    return pareto(df, out) + depth_plot(df, out)


def depth_plot(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    depth = _depth(df)
    if depth.empty or depth["first_position"].nunique() < 2:
        return []
    theme()
    fig, ax = plt.subplots(figsize=(11, 6.5))
    for variant, part in depth.groupby("variant"):
        part = part.sort_values("first_position")
        mid = (part["first_position"] + part["last_position"]) / 2
        ax.plot(mid, part["mean_kld"].clip(lower=1e-7), "o-", label=variant)
    ax.set(xlabel="position in the context (bucket middle)", ylabel="mean KL divergence from the source [nats]",
           yscale="log", title="What a quantized KV cache loses, by depth in the context")
    ax.legend(fontsize=11)
    return [("KL divergence by depth", save_figure(fig, out / "quality_depth.png"))]


def sections(df: pd.DataFrame) -> str:
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return ""
    table = pd.DataFrame({
        "choice": ok["variant"],
        "PPL": ok["ppl"].map("{:.4f}".format) + " ± " + ok["ppl_err"].map("{:.4f}".format),
        "PPL(Q)/PPL(base)": ok["ppl_ratio"].map("{:.5f}".format) + " ± " + ok["ppl_ratio_err"].map("{:.5f}".format),
        "mean KLD": ok["mean_kld"].map("{:.6f}".format) + " ± " + ok["mean_kld_err"].map("{:.6f}".format),
        "RMS Δp": ok["rms_dp"].map(lambda v: f"{100 * v:.3f}%"),
        "same top": ok["same_top"].map(lambda v: f"{100 * v:.2f}%")})
    source = ok["source_weights"].iloc[0] if "source_weights" in ok else "?"
    lines = ["### As llama-perplexity prints it", "",
             f"The source (the model as it is, its matrices in {source}, with an f16 KV cache) has perplexity "
             f"**{ok['ppl_base'].iloc[0]:.4f} ± {ok['ppl_base_err'].iloc[0]:.4f}** on this text; every other figure "
             f"is relative to it. A source that is itself quantized understates what the types above its own bits "
             f"lose: against a {source} source, q8_0 and q6_k mostly measure how well they copy {source}'s errors.",
             "", markdown_table(table), "",
             f"Text: {int(ok['text_tokens'].iloc[0])} tokens (SHA-256 `{str(ok['text_sha256'].iloc[0])[:16]}…`), "
             f"{int(ok['scored_tokens'].iloc[0])} scored.", "", *budget(ok), ""]
    depth = _depth(df)
    if not depth.empty:
        first, last = depth["first_position"].min(), depth["first_position"].max()
        for variant, part in depth.groupby("variant"):
            a = part[part["first_position"] == first]["mean_kld"].iloc[0]
            b = part[part["first_position"] == last]["mean_kld"].iloc[0]
            if a > 0:
                lines.append(f"- **{variant}**: mean KLD {a:.2e} at positions from {first}, {b:.2e} from {last} "
                             f"(×{b / a:.2f} deeper in the context).")
        lines.append("")
    return "\n".join(lines)


def budget(ok: pd.DataFrame) -> list[str]:
    """The fastest choice and the smallest file whose mean KLD is within ``quality.max_kld``."""
    limit = float(ok["quality.max_kld"].iloc[0]) if "quality.max_kld" in ok else 0.05
    within = ok[ok["mean_kld"] <= limit]
    lines = [f"### Within a KLD budget of {limit:g} nats (quality.max_kld)", ""]
    if within.empty:
        return [*lines, f"No choice of this report keeps its mean KLD within {limit:g}; the closest is "
                        f"{ok.loc[ok['mean_kld'].idxmin(), 'variant']} ({ok['mean_kld'].min():.4f})."]
    rows = []
    for column, what in (("tg_tokens_per_s", "fastest generation"), ("pp_tokens_per_s", "fastest prompt")):
        if column in within and within[column].notna().any():
            best = within.loc[within[column].idxmax()]
            rows.append({"the choice": what, "is": best["variant"], "speed": f"{best[column]:.1f} t/s",
                         "mean KLD": f"{best['mean_kld']:.4f}", "file": f"{best['file_bytes'] / 2**20:.1f} MiB"})
    if "file_bytes" in within:
        best = within.loc[within["file_bytes"].idxmin()]
        rows.append({"the choice": "smallest file", "is": best["variant"],
                     "speed": f"{best['tg_tokens_per_s']:.1f} t/s" if "tg_tokens_per_s" in best else "",
                     "mean KLD": f"{best['mean_kld']:.4f}", "file": f"{best['file_bytes'] / 2**20:.1f} MiB"})
    return [*lines, markdown_table(pd.DataFrame(rows))]


REPORT = Report(headline=("ppl", "ppl_err", "ppl_ratio", "mean_kld", "p99_kld", "rms_dp", "same_top", "file_bytes",
                          "pp_tokens_per_s", "tg_tokens_per_s"),
                plots=plots, sections=sections)
