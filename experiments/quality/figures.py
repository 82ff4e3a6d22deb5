"""The quality experiment's part of the report: perplexity and the comparison statistics, and KL divergence by
position in the context for each KV-cache type."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from experiments.framework.spec import Report
from experiments.reporting.plotting import save_figure, theme
from experiments.reporting.tables import markdown_table


def _depth(df: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for source, variant in df[df["status"] == "ok"][["source", "variant"]].itertuples(index=False):
        path = Path(source) / "depth.csv"
        if path.exists():
            frames.append(pd.read_csv(path).assign(variant=variant))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plots(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    depth = _depth(df)
    if depth.empty or depth["first_position"].nunique() < 2:
        return []
    theme()
    fig, ax = plt.subplots(figsize=(11, 6.5))
    for variant, part in depth.groupby("variant"):
        part = part.sort_values("first_position")
        mid = (part["first_position"] + part["last_position"]) / 2
        ax.plot(mid, part["mean_kld"].clip(lower=1e-7), "o-", label=variant)
    ax.set(xlabel="position in the context (bucket middle)", ylabel="mean KL divergence from the f16 cache [nats]",
           yscale="log", title="What a quantized KV cache loses, by depth in the context")
    ax.legend(fontsize=11)
    return [("KL divergence by depth", save_figure(fig, out / "quality_depth.png"))]


def sections(df: pd.DataFrame) -> str:
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return ""
    table = pd.DataFrame({
        "cache": ok["variant"],
        "PPL": ok["ppl"].map("{:.4f}".format) + " ± " + ok["ppl_err"].map("{:.4f}".format),
        "PPL(Q)/PPL(base)": ok["ppl_ratio"].map("{:.5f}".format) + " ± " + ok["ppl_ratio_err"].map("{:.5f}".format),
        "mean KLD": ok["mean_kld"].map("{:.6f}".format) + " ± " + ok["mean_kld_err"].map("{:.6f}".format),
        "RMS Δp": ok["rms_dp"].map(lambda v: f"{100 * v:.3f}%"),
        "same top": ok["same_top"].map(lambda v: f"{100 * v:.2f}%")})
    lines = ["### As llama-perplexity prints it", "", markdown_table(table), "",
             f"Text: {int(ok['text_tokens'].iloc[0])} tokens (SHA-256 `{str(ok['text_sha256'].iloc[0])[:16]}…`), "
             f"{int(ok['scored_tokens'].iloc[0])} scored. The base is the same file with an f16 KV cache.", ""]
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


REPORT = Report(headline=("ppl", "ppl_err", "ppl_ratio", "mean_kld", "p99_kld", "rms_dp", "same_top", "eval_s"),
                plots=plots, sections=sections)
