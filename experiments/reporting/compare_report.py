"""Write a comparison: ``compare.md`` (what differs first, then per experiment the timed verdicts, the exact
figures that differ, the unmatched points), ``compare.csv`` (every timed pair) and the ratio plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from experiments.reporting import drift
from experiments.reporting.compare import Comparison, regressions
from experiments.reporting.html import write_html
from experiments.reporting.plotting import save_figure, theme
from experiments.reporting.stats import FASTER, INCONCLUSIVE, NO_CHANGE, SLOWER, VERDICTS
from experiments.reporting.tables import markdown_table
from infer_core.measure.files import atomic_path, write_text_atomic

COLORS = {FASTER: "#2a9d8f", NO_CHANGE: "#8d99ae", SLOWER: "#e76f51", INCONCLUSIVE: "#e9c46a"}


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
                                                 f"time {result.labels[0]} (90% interval)")
        ax.legend(fontsize=9, loc="lower right")
    return save_figure(fig, out / "compare_ratios.png")


def drift_part(result: Comparison, threshold: float, out: Path) -> list[str]:
    """How far the machine drifted during each sweep (its canary), and how the sweeps' machines compare."""
    named = {k: v for k, v in result.canary.items() if not v.empty}
    if not named:
        return ["No sweep here read the drift canary (it came with `sweep.rounds`): how far the machine drifted "
                "during them is not known.", ""]
    lines = ["## The machine during each sweep", "",
             "The drift canary (a 64 MiB copy and a 512×512 sgemm, about 50 ms) was read before each pass of each "
             "timed point. The lowest and highest readings are against the sweep's own median.", "",
             markdown_table(drift.summary(named, threshold)), ""]
    rows = [{"experiment": name, "sweep": label, **{k: f"{100 * (np.exp(v) - 1):+.1f}%" for k, v in moved.items()}}
            for (name, label), moved in result.moved.items() if moved]
    if rows:
        lines += [f"How much faster the machine was while each later sweep measured an experiment than while "
                  f"`{result.labels[0]}` did, by the canary's median (negative: slower). A point follows the machine "
                  "by a share between none and all of that move, which is unknown: each timed point's interval is "
                  "widened to span it, so a move of the machine alone is never called a change.", "",
                  markdown_table(pd.DataFrame(rows)), ""]
    plot = drift.figure(named, threshold, out)
    return lines + ([f"![The machine during each sweep]({plot.name})", ""] if plot else [])


#: Pairs further apart than this many steps of the sweep (one pass to the next) were not neighbours in its order.
NEIGHBOURS = 1.5


def briefly(off: str, most: int = 3) -> str:
    """A point's passes taken while the machine was off, listed up to ``most``, else counted (compare.csv lists
    them all)."""
    passes = [p for p in off.split("; ") if p]
    return off if len(passes) <= most else f"{len(passes)} passes (listed in compare.csv)"


def basis_note(result: Comparison) -> str:
    """What the timed intervals rest on."""
    if result.paired:
        gap = result.timed["gap_s"].dropna() if not result.timed.empty else pd.Series(dtype=float)
        apart = f"a median {gap.median():.1f} s apart" if len(gap) else "in turn"
        step = drift.step_s(list(result.canary.values()))
        far = (f" **The pairs were not neighbours:** one pass to the next took {step:.1f} s among these points, a "
               f"pair {gap.median():.1f} s. Put the compared knob last on the command line (the sweeper varies it "
               "fastest) so that each pair runs back to back." if len(gap) and gap.median() > NEIGHBOURS * step else "")
        return ("These are the settings of one sweep (`--between`), measured side by side: pass r of a point and pass "
                f"r of its pair ran {apart} (`gap_s`), so the machine's level during the pass is in both and cancels. "
                "A timed point's interval rests on the differences of its pair's passes (`basis` pairs), their "
                "variance moderated by the other points'." + far)
    return ("The interval of a timed point rests on its passes (`sweep.rounds`, spread over each sweep: the machine's "
            "drift between them), its variance moderated by the other points' (`basis` passes); with one pass per "
            "point, on the drift the sweeps' canaries saw (`canary`); served requests, on their own samples "
            "(`samples`: the variation within one run only).")


def write(result: Comparison, out: Path, threshold: float, fail_above: float | None) -> Path:
    """``compare.md``, ``compare.csv`` and the plot into ``out``; returns the Markdown's path."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "compare.csv") as tmp:
        result.timed.to_csv(tmp, index=False)
    plot = ratio_plot(result, threshold, out)
    first = result.labels[0]
    lines = [f"# Comparison: {' vs '.join(result.labels)}", "",
             f"Ratios are time in a later {'setting' if result.paired else 'sweep'} / time in `{first}` (above 1: "
             f"slower), each with a 90% interval. A point is *slower* or *faster* when its whole interval lies beyond "
             f"{100 * threshold:g}% either way, *no change* when it lies within ±{100 * threshold:g}%, *inconclusive* "
             "otherwise. `machine_off` names the passes measured while the canary was off its sweep's median by more "
             "than the threshold.", "", basis_note(result), ""]
    lines += ["## What differs between the sweeps", ""]
    env = result.environment
    lines += [markdown_table(env) if not env.empty else "The environments are the same.", ""]
    if not result.machine.empty:
        lines += ["The machine's own roofs, measured in each sweep (`experiment=machine`): when they moved, every "
                  "timing moved with them, whatever the code did.", "", markdown_table(result.machine), ""]
    lines += drift_part(result, threshold, out)
    for name, knobs in result.settings.items():
        if knobs:
            table = pd.DataFrame(knobs, index=result.labels).T.rename_axis("knob").reset_index()
            lines += [f"Knobs set differently for `{name}` (the same at every point of each sweep):", "",
                      markdown_table(table), ""]
    t = result.timed
    if not t.empty:
        counts = t["verdict"].value_counts()
        lines += ["## Summary", "", f"{len(t)} timed comparisons: " + ", ".join(
            f"{counts.get(v, 0)} {v}" for v in VERDICTS) + f" ({100 * share_unchanged(result):.0f}% no change); "
            f"{result.exact_checked} exact figures checked, {len(result.exact)} differ.", ""]
    if plot is not None:
        lines += [f"![Ratios per point]({plot.name})", ""]
    for name in sorted(set(t.get("experiment", pd.Series(dtype=str))) | set(result.exact.get("experiment", []))):
        lines += [f"## {name}", ""]
        part = t[t["experiment"] == name] if not t.empty else t
        if not part.empty:
            shown = part.assign(interval=part["ratio_low"].map("{:.3f}".format) + " – "
                                + part["ratio_high"].map("{:.3f}".format),
                                passes=part["passes_a"].astype(str) + " / " + part["passes_b"].astype(str),
                                machine_off=part["machine_off"].fillna("").map(briefly))
            cols = ["point", "measure", "sweep", "median_a_s", "median_b_s", "ratio", "interval", "verdict", "basis",
                    "passes", *(["gap_s"] if result.paired else []),
                    *(["machine_off"] if part["machine_off"].fillna("").ne("").any() else [])]
            lines += [markdown_table(shown[cols]), ""]
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
                  markdown_table(bad[["experiment", "point", "measure", "sweep", "ratio", "ratio_low", "ratio_high"]])
                  if not bad.empty else "None.", ""]
    path = write_text_atomic(out / "compare.md", "\n".join(lines) + "\n")
    write_html(path)  # compare.html beside it
    return path
