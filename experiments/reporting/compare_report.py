"""Write a comparison: ``compare.md`` (what differs first, then per experiment the timed verdicts, the exact
figures that differ, the unmatched points), ``compare.csv`` (every timed pair) and the ratio plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from experiments.reporting.compare import Comparison, regressions
from experiments.reporting.html import write_html
from experiments.reporting.plotting import save_figure, theme
from experiments.reporting.stats import FASTER, NO_CHANGE, SLOWER
from experiments.reporting.tables import markdown_table
from infer_core.measure.files import atomic_path, write_text_atomic

COLORS = {FASTER: "#2a9d8f", NO_CHANGE: "#8d99ae", SLOWER: "#e76f51"}


def share_unchanged(result: Comparison) -> float:
    t = result.timed
    return float((t["verdict"] == NO_CHANGE).mean()) if not t.empty else float("nan")


LABELLED = 60  # past this many lines in an experiment, its panel shows the ratios sorted, without labels


def ratio_plot(result: Comparison, threshold: float, out: Path) -> Path | None:
    """Ratio (B / A time) per point with its interval, one panel per experiment, the no-change band shaded."""
    t = result.timed
    if t.empty:
        return None
    theme()
    names = list(t["experiment"].unique())
    height = [min(max(2, 0.45 * (t["experiment"] == n).sum()), 0.45 * LABELLED) for n in names]
    fig, axes = plt.subplots(len(names), 1, figsize=(13, 1.5 + sum(height)), squeeze=False,
                             gridspec_kw={"height_ratios": height})
    for ax, name in zip(axes[:, 0], names, strict=True):
        part = t[t["experiment"] == name]
        many = len(part) > LABELLED
        part = (part.sort_values("ratio") if many else part).reset_index(drop=True)
        ax.axvspan(1 / (1 + threshold), 1 + threshold, color="#e9ecef", zorder=0, label="no-change band")
        ax.axvline(1, color="gray", lw=1)
        for verdict, rows in part.groupby("verdict"):
            err = np.vstack([rows["ratio"] - rows["ratio_low"], rows["ratio_high"] - rows["ratio"]]).clip(0)
            ax.errorbar(rows["ratio"], rows.index, xerr=np.nan_to_num(err), fmt="o", color=COLORS[verdict],
                        label=f"{verdict} ({len(rows)})", capsize=0 if many else 3, ms=2 if many else 6,
                        elinewidth=0.5 if many else 1.5)
        if many:
            ax.set(yticks=[], ylabel=f"{len(part)} lines, by ratio")
        else:
            # the panel names the experiment: its knobs go without the prefix (the pairing knobs all vary)
            point = part["point"].str.replace(f"{name}.", "", regex=False).str.slice(0, 70)
            labels = point + " · " + part["measure"] + (
                "  [" + part["sweep"] + "]" if part["sweep"].nunique() > 1 else "")
            ax.set_yticks(np.arange(len(part)), labels, fontsize=9)
        ax.invert_yaxis()
        ax.set(xscale="log", title=name, xlabel=f"time {result.labels[1] if len(result.labels) == 2 else 'B'} / "
                                                 f"time {result.labels[0]} (95% bootstrap interval)")
        ax.legend(fontsize=9, loc="lower right")
    return save_figure(fig, out / "compare_ratios.png")


def write(result: Comparison, out: Path, threshold: float, fail_above: float | None) -> Path:
    """``compare.md``, ``compare.csv`` and the plot into ``out``; returns the Markdown's path."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "compare.csv") as tmp:
        result.timed.to_csv(tmp, index=False)
    plot = ratio_plot(result, threshold, out)
    first = result.labels[0]
    lines = [f"# Comparison: {' vs '.join(result.labels)}", "",
             f"Ratios are time in a later sweep / time in `{first}` (above 1: slower). A change counts when the "
             f"Mann–Whitney U test rejects equal distributions (p < 0.05) and the ratio of medians is past "
             f"{100 * threshold:g}% either way; runs minutes apart on a shared machine differ by a few percent.", ""]
    lines += ["## What differs between the sweeps", ""]
    env = result.environment
    lines += [markdown_table(env) if not env.empty else "The environments are the same.", ""]
    if not result.machine.empty:
        lines += ["The machine's own roofs, measured in each sweep (`experiment=machine`): when they moved, every "
                  "timing moved with them, whatever the code did.", "", markdown_table(result.machine), ""]
    for name, knobs in result.settings.items():
        if knobs:
            table = pd.DataFrame(knobs, index=result.labels).T.rename_axis("knob").reset_index()
            lines += [f"Knobs set differently for `{name}` (the same at every point of each sweep):", "",
                      markdown_table(table), ""]
    t = result.timed
    if not t.empty:
        counts = t["verdict"].value_counts()
        lines += ["## Summary", "", f"{len(t)} timed comparisons: " + ", ".join(
            f"{counts.get(v, 0)} {v}" for v in (FASTER, SLOWER, NO_CHANGE)) + f" ({100 * share_unchanged(result):.0f}% "
            f"unchanged); {result.exact_checked} exact figures checked, {len(result.exact)} differ.", ""]
    if plot is not None:
        lines += [f"![Ratios per point]({plot.name})", ""]
    for name in sorted(set(t.get("experiment", pd.Series(dtype=str))) | set(result.exact.get("experiment", []))):
        lines += [f"## {name}", ""]
        part = t[t["experiment"] == name] if not t.empty else t
        if not part.empty:
            shown = part.assign(interval=part["ratio_low"].map("{:.3f}".format) + " – "
                                + part["ratio_high"].map("{:.3f}".format))
            lines += [markdown_table(shown[["point", "measure", "sweep", "median_a_s", "median_b_s", "ratio",
                                            "interval", "p_value", "verdict"]]), ""]
        ex = result.exact[result.exact["experiment"] == name] if not result.exact.empty else result.exact
        lines += ["Exact figures: " + ("all equal." if ex.empty else f"{len(ex)} differ:"), ""]
        if not ex.empty:
            lines += [markdown_table(ex.drop(columns="experiment")), ""]
    if not result.unmatched.empty:
        lines += ["## Points in one sweep only", "", markdown_table(result.unmatched), ""]
    if result.left_out:
        lines += ["## Left out (not compared)", "", *(f"- {line}" for line in result.left_out), ""]
    if fail_above is not None:
        bad = regressions(result, fail_above)
        lines += [f"## Regressions past {100 * fail_above:g}%", "",
                  markdown_table(bad[["experiment", "point", "measure", "sweep", "ratio", "p_value"]])
                  if not bad.empty else "None.", ""]
    path = write_text_atomic(out / "compare.md", "\n".join(lines) + "\n")
    write_html(path)  # compare.html beside it
    return path
