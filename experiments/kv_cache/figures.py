"""The KV-cache experiment's part of the report: time, projections and speedup plots, fitted exponents."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from experiments.framework.knobs import config_columns
from experiments.framework.spec import Report
from experiments.kv_cache.schema import KEY, KVConfig
from experiments.reporting.plotting import mark_unstable, save_figure, theme
from experiments.reporting.tables import markdown_table
from infer_core.decoder.decode import expected_kv_projections

SEQ = f"{KEY}.seq_len"
ORDER = ["recompute", "concat", "prealloc"]
#: Knobs that are the plots' axes or hues, not a reason to draw separate curves.
AXES = {SEQ, f"{KEY}.strategies"}


def _setting(df: pd.DataFrame) -> pd.Series | None:
    """A label for each row built from the knobs that vary, other than seq_len."""
    vary = [c for c in ["seed", *config_columns(KEY, KVConfig)]
            if c in df and c not in AXES and df[c].astype(str).nunique() > 1]
    if not vary:
        return None
    return df[vary].astype(str).apply(lambda r: " ".join(f"{c}={v}" for c, v in r.items()), axis=1)


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    ok = df[df["status"] == "ok"].copy()
    ok["setting"] = _setting(ok) if len(ok) else None
    return ok.sort_values(SEQ)


def _palette(variants) -> dict[str, tuple]:
    names = [v for v in ORDER if v in set(variants)] + sorted(set(variants) - set(ORDER))
    return dict(zip(names, sns.color_palette("colorblind", len(names)), strict=True))


def _lines(ax: plt.Axes, ok: pd.DataFrame, y: str, palette: dict, band: tuple[str, str] | None = None) -> None:
    by_setting = ok["setting"].notna().any()
    style = "setting" if by_setting else "variant"  # distinct dashes keep equal curves visible
    sns.lineplot(data=ok, x=SEQ, y=y, hue="variant", style=style, palette=palette, markers=True, ax=ax,
                 hue_order=list(palette), errorbar=None, markersize=9)
    if band:
        keys = ["variant"] + (["setting"] if by_setting else [])
        for key, part in ok.groupby(keys):
            color = palette[key[0] if isinstance(key, tuple) else key]
            ax.fill_between(part[SEQ], part[band[0]], part[band[1]], color=color, alpha=0.25, lw=0)


def plots(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    """Time, K/V projections and speedup against sequence length; returns (title, path) pairs."""
    ok = _ok(df)
    if ok.empty:
        return []
    theme()
    palette = _palette(ok["variant"])
    made = []

    fig, ax = plt.subplots(figsize=(10, 6.5))
    _lines(ax, ok, "time_median_s", palette, band=("time_q1_s", "time_q3_s"))
    mark_unstable(ax, ok, SEQ, "time_median_s")
    ax.set(xscale="log", yscale="log", xlabel="generated tokens (kv.seq_len)",
           ylabel="total generation time [s]", title="Generation time: median, band = IQR")
    made.append(("Time vs sequence length", save_figure(fig, out / "kv_cache_time_vs_seq_len.png")))

    fig, ax = plt.subplots(figsize=(10, 6.5))
    grid = np.unique(np.geomspace(ok[SEQ].min(), ok[SEQ].max(), 50).round().astype(int))
    for p in sorted(ok[f"{KEY}.prompt_len"].unique()):
        for strategy, label, ls in (("recompute", "n·p + n(n+1)/2", "-"), ("prealloc", "p + n", "--")):
            counts = [expected_kv_projections(strategy, int(p), int(n)) for n in grid]
            ax.plot(grid, counts, ls=ls, color="0.55", lw=2.5, zorder=1, label=f"formula {label} (p={int(p)})")
    marks = {"recompute": ("o", 11), "concat": ("s", 16), "prealloc": ("x", 10)}  # concat and prealloc coincide
    for variant, part in ok.groupby("variant"):
        marker, size = marks.get(variant, ("D", 9))
        ax.plot(part[SEQ], part["kv_projections"], ls="none", marker=marker, ms=size, mew=2, zorder=3,
                mfc="none" if marker == "s" else palette[variant], color=palette[variant], label=f"{variant} (counted)")
    ax.legend(fontsize=11)
    ax.set(xscale="log", yscale="log", xlabel="generated tokens (kv.seq_len)",
           ylabel="K/V token projections per layer", title="K/V projections: counted (markers) and formulas (lines)")
    made.append(("K/V projections vs sequence length", save_figure(fig, out / "kv_cache_projections_vs_seq_len.png")))

    if "speedup_vs_recompute" in ok:
        cached = ok[ok["variant"] != "recompute"].dropna(subset=["speedup_vs_recompute"])
    else:
        cached = ok.iloc[0:0]
    if not cached.empty:
        fig, ax = plt.subplots(figsize=(10, 6.5))
        _lines(ax, cached, "speedup_vs_recompute", {k: v for k, v in palette.items() if k != "recompute"},
               band=("speedup_q1", "speedup_q3"))
        mark_unstable(ax, cached, SEQ, "speedup_vs_recompute", "speedup_unstable",
                      "unstable ratio (quartiles > 10% apart)")
        ax.axhline(1.0, color="0.4", ls="--", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="generated tokens (kv.seq_len)",
               ylabel="speedup vs recompute (median of per-round ratios)",
               title="What the KV cache buys (band: quartiles of the paired rounds)")
        made.append(("Speedup vs sequence length", save_figure(fig, out / "kv_cache_speedup_vs_seq_len.png")))
    return made


def fit_exponent(seq_len: np.ndarray, seconds: np.ndarray) -> tuple[float, float]:
    """Least squares of log(time) = a + k·log(seq_len); returns (k, a)."""
    k, a = np.polyfit(np.log(seq_len), np.log(seconds), 1)
    return float(k), float(a)


def _fit(n: np.ndarray, times: np.ndarray, sel: np.ndarray) -> float:
    return fit_exponent(n[sel], times[sel])[0] if sel.sum() >= 2 else float("nan")


def exponents(df: pd.DataFrame) -> pd.DataFrame:
    """Fitted exponent of total time vs seq_len per strategy: over all points and over the top
    decade, on median times, and over the top decade on minimum times (the least disturbed by
    a noisy machine: noise only ever adds time)."""
    ok = _ok(df)
    rows = []
    keys = ["variant"] + (["setting"] if ok["setting"].notna().any() else [])
    for key, part in ok.groupby(keys, sort=False):
        part = part.groupby(SEQ, as_index=False)[["time_median_s", "time_min_s"]].median()
        n, t, t_min = (part[c].to_numpy(float) for c in (SEQ, "time_median_s", "time_min_s"))
        top = n >= n.max() / 10
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        row["points"] = len(n)
        row["exponent (all)"] = _fit(n, t, np.ones_like(top))
        row["top decade"] = f"{int(n[top].min())}–{int(n[top].max())}"
        row["exponent (top decade)"] = _fit(n, t, top)
        row["exponent (top decade, min times)"] = _fit(n, t_min, top)
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table["variant"] = pd.Categorical(table["variant"], [v for v in ORDER if v in set(table["variant"])]
                                          + sorted(set(table["variant"]) - set(ORDER)))
        table = table.sort_values(keys)
    return table


def sections(df: pd.DataFrame) -> str:
    """The fitted exponents, with how to read them."""
    table = exponents(df)
    if table.empty:
        return ""
    return "\n".join([
        "### Scaling of total generation time",
        "",
        "Exponent k of `time ∝ seq_len^k`, least squares on log–log with an intercept. Without a cache "
        "each step is a full causal pass (O(t·d² + t²·d)), so the total grows like n²…n³; with one, a step "
        "costs O(d² + t·d) and the total tends to n¹ while per-step overhead dominates. The last column fits "
        "the fastest sample of each point: on a noisy machine it shows the cost without the noise.",
        "",
        markdown_table(table),
        "",
    ])


REPORT = Report(
    headline=("time_median_s", "time_iqr_s", "tokens_per_s", "speedup_vs_recompute", "speedup_q1", "speedup_q3",
              "speedup_unstable", "kv_projections", "kv_cache_bytes", "max_abs_err_vs_ref", "unstable"),
    plots=plots,
    sections=sections,
)
