"""The serve experiment's part of the report: the latency-throughput curve (p50 and p99 TTFT and TPOT
against achieved output tokens/s, one point per load level), TTFT per level, and the knee: the
highest load that meets the SLOs, and where latency breaks."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from experiments.framework.spec import Report
from experiments.reporting.plotting import label_points, legend_below, save_figure, theme
from experiments.reporting.tables import markdown_table
from experiments.serve.schema import KEY

SLO_TTFT, SLO_TPOT = f"{KEY}.slo_ttft_ms", f"{KEY}.slo_tpot_ms"


def short_level(variant: object) -> str:
    """A load level's name for a label: ``rate 8/s, c ≤ 4``."""
    return str(variant).replace("concurrency <= ", "c ≤ ").replace("concurrency ", "c = ")


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    ok = df[(df["status"] == "ok") & df["output_throughput"].notna()].copy() if "output_throughput" in df else df[:0]
    if ok.empty:
        return ok
    # "embedded" only for the server the point started itself (serve.url null), whatever address a user's has
    # (the report drops a column null in every row: no `serve.url` column means every server was the point's own)
    started = ok[f"{KEY}.url"].isna() if f"{KEY}.url" in ok else pd.Series(True, index=ok.index)
    embedded = "embedded"
    if "server_kind" in ok:  # which embedded server, and llama-server's slots
        slots = ok["server_parallel"].map(lambda n: f", {n:g} slot{'s' if n != 1 else ''}" if pd.notna(n) else "") \
            if "server_parallel" in ok else ""
        embedded = "embedded " + ok["server_kind"].fillna("").astype(str) + slots
    where = ok["server_url"].astype(str).where(~started, embedded)
    ok["setup"] = ok["server_model"].astype(str) + " @ " + where + " (" + ok[f"{KEY}.api"].astype(str) + ")"
    return ok.sort_values(["setup", "mean_in_flight"])  # by the load offered


def curve(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    """p50 (solid) and p99 (dashed) TTFT and TPOT against the output tokens/s each load level achieved."""
    ok = _ok(df)
    if ok.empty:
        return []
    theme()
    fig, axes = plt.subplots(1, 2, figsize=(17, 7))
    colors = dict(zip(ok["setup"].unique(), sns.color_palette(n_colors=ok["setup"].nunique()), strict=True))
    for ax, metric, slo, title in ((axes[0], "ttft", SLO_TTFT, "Time to first token"),
                                   (axes[1], "tpot", SLO_TPOT, "Time per output token")):
        for setup, part in ok.groupby("setup"):
            ax.plot(part["output_throughput"], part[f"median_{metric}_ms"], "o-", color=colors[setup],
                    label=f"{setup} p50")
            ax.plot(part["output_throughput"], part[f"p99_{metric}_ms"], "s--", color=colors[setup], alpha=0.7,
                    label=f"{setup} p99")
        if slo in ok and ok[slo].notna().any():
            ax.axhline(float(ok[slo].dropna().iloc[0]), color="crimson", ls=":", lw=2, label="SLO")
        ax.set(yscale="log", xlabel="achieved output tokens/s", ylabel="ms", title=title)
        label_points(ax, [(row["output_throughput"], row[f"p99_{metric}_ms"], short_level(row["variant"]))
                          for _, row in ok.iterrows()])
    handles, labels = axes[0].get_legend_handles_labels()
    fig.suptitle("Latency against throughput, one point per load level (p50 solid, p99 dashed)")
    legend_below(fig, handles, labels, ncol=min(3, len(labels)))
    return [("Latency–throughput curve", save_figure(fig, out / "serve_latency_throughput.png"))]


def ttft_per_level(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    """The distribution of TTFT over the requests of each level (from requests.csv)."""
    ok = _ok(df)
    if ok.empty:
        return []
    frames = []
    for source, setup in ok[["source", "setup"]].drop_duplicates().itertuples(index=False):
        path = Path(source) / "requests.csv"
        if path.exists():
            frames.append(pd.read_csv(path).assign(setup=setup))
    if not frames:
        return []
    req = pd.concat(frames, ignore_index=True)
    req = req[req["error"].isna() & req["ttft_ms"].notna()]
    order = list(ok.drop_duplicates("variant")["variant"])  # by the load offered
    req = req[req["variant"].isin(order)]
    if req.empty:
        return []
    theme()
    fig, ax = plt.subplots(figsize=(max(10, 1.6 * len(order)), 7))
    several = req["setup"].nunique() > 1
    sns.boxplot(req, x="variant", y="ttft_ms", hue="setup" if several else None, order=order, ax=ax, log_scale=True)
    ax.set(xlabel="load level", ylabel="TTFT (ms)",
           title="Time to first token per level" + ("" if several else f"\n{req['setup'].iloc[0]}"))
    if several:
        sns.move_legend(ax, "upper center", bbox_to_anchor=(0.5, -0.25), ncol=1, fontsize=11, title=None)
    ax.set_xticks(range(len(order)), [short_level(v).replace(", ", ",\n") for v in order])
    return [("TTFT per load level", save_figure(fig, out / "serve_ttft.png"))]


def plots(df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    return curve(df, out) + ttft_per_level(df, out)


def _meets(row: pd.Series) -> bool:
    ttft, tpot = row.get(SLO_TTFT), row.get(SLO_TPOT)
    return (pd.isna(ttft) or row["p99_ttft_ms"] <= ttft) and (pd.isna(tpot) or not row["p99_tpot_ms"] > tpot)


def sections(df: pd.DataFrame) -> str:
    """The knee of each setup, and a word on queueing when throughput stays flat while TTFT grows."""
    ok = _ok(df)
    if ok.empty:
        return ""
    rows, notes = [], []
    for setup, part in ok.groupby("setup"):
        meets = part[part.apply(_meets, axis=1)]
        knee = meets.iloc[-1] if not meets.empty else None
        beyond = part[part["mean_in_flight"] > knee["mean_in_flight"]] if knee is not None else part
        rows.append({"setup": setup, "knee (highest load meeting the SLOs)": knee["variant"] if knee is not None
                     else "none", "tok/s": knee["output_throughput"] if knee is not None else np.nan,
                     "p99 TTFT ms": knee["p99_ttft_ms"] if knee is not None else np.nan,
                     "p99 TPOT ms": knee["p99_tpot_ms"] if knee is not None else np.nan,
                     "breaks at": beyond.iloc[0]["variant"] if not beyond.empty else "-"})
        low, high = part.iloc[0], part.iloc[-1]
        crowd = high["mean_in_flight"] / low["mean_in_flight"] if len(part) > 2 else 0.0
        more = high["output_throughput"] / low["output_throughput"]
        if crowd > 2 and more < crowd / 2 and high["median_ttft_ms"] > 2 * low["median_ttft_ms"]:
            notes.append(f"- **{setup}**: from {low['variant']} to {high['variant']} the requests in flight grow "
                         f"{crowd:.1f}× but the output throughput only {more:.2f}×, while the median TTFT grows "
                         f"{high['median_ttft_ms'] / low['median_ttft_ms']:.1f}×: the requests queue. This server "
                         "runs about one request at a time; more in flight buys waiting, not throughput.")
    slo = (f"SLOs: p99 TTFT ≤ {ok[SLO_TTFT].dropna().iloc[0]:g} ms" if SLO_TTFT in ok and ok[SLO_TTFT].notna().any()
           else "no TTFT SLO") + (f", p99 TPOT ≤ {ok[SLO_TPOT].dropna().iloc[0]:g} ms"
                                  if SLO_TPOT in ok and ok[SLO_TPOT].notna().any() else ", no TPOT SLO")
    return "\n".join(["#### Knee", "", f"{slo} (`{SLO_TTFT}`, `{SLO_TPOT}`).", "",
                      markdown_table(pd.DataFrame(rows)), "", *notes, *reconcile(ok), *sample(ok)])


def reconcile(ok: pd.DataFrame) -> list[str]:
    """The layers side by side for llama-server points: llama-batched-bench on the same file and threads (no HTTP, no
    sampling), the batch the server achieved, its generation speed while busy, and the throughputs a client sees."""
    if "reference_tg_tokens_per_s" not in ok or ok["reference_tg_tokens_per_s"].isna().all():
        return []
    part = ok[ok["reference_tg_tokens_per_s"].notna()]
    rows = []
    for _, r in part.iterrows():
        busy = r["server_busy_slots_per_decode"]
        tpot = r["median_tpot_ms"]  # 0 when a fast server's tokens reach the client in one read
        generating = busy / (tpot / 1e3) if tpot > 0 else np.nan
        rows.append({"setup": r["setup"], "level": short_level(r["variant"]),
                     "engine tg": r.get("reference_engine_tg_tokens_per_s", np.nan),
                     "llama-bench tg": r.get("reference_llama_bench_tg_tokens_per_s", np.nan),
                     "batched-bench tg, B=1": r["reference_tg_b1_tokens_per_s"],
                     "batched-bench tg, B=slots": r["reference_tg_tokens_per_s"],
                     "busy slots per decode": busy, "generating: busy / TPOT": generating,
                     "share of batched-bench at B=slots": generating / r["reference_tg_tokens_per_s"],
                     "server generated tok/s": r["server_output_throughput"],
                     "client output tok/s": r["output_throughput"]})
    return ["", "#### Reconciling the layers", "",
            "For each llama-server point, left to right, from llama.cpp alone to what a client receives:",
            "",
            "- *engine tg*, *llama-bench tg*: one sequence generating `serve.output_len` tokens on the same file and "
            "threads, timed in process as the engine experiment times it and by `llama-bench` "
            "(`benchmarks/bench_llama_tools.py` checks the two agree within 5%).",
            "- *batched-bench tg*: `llama-batched-bench` with the point's prompt and output lengths, one sequence "
            "(B=1: the same decoding as above, after a prompt) and as many as the server's slots: decoding alone, no "
            "HTTP, no sampling, no queue, every sequence in step (its pp is in `reference_pp_tokens_per_s`).",
            "- *busy slots per decode*: the batch continuous batching achieved (the server's `/metrics`).",
            "- *generating: busy / TPOT*: the server's generation speed while it generates, from the client's median "
            "TPOT. Below batched-bench at that batch size by what each token costs on top of decoding: sampling "
            "each sequence, detokenizing, and streaming it over HTTP; and when fewer slots are busy, a smaller batch.",
            "- *server generated tok/s*: tokens the server generated over the level's duration (its `/metrics`). "
            "Below the generating speed by the time spent on prompts (prefill interleaved with decoding) and idle "
            "between requests.",
            "- *client output tok/s*: the same tokens as the client counted them (equal to the server's when "
            "`token_count_disagreements` is 0); TTFT adds the queue: requests deferred while every slot is busy "
            "(`server_max_deferred`).", "", markdown_table(pd.DataFrame(rows)), ""]


def sample(ok: pd.DataFrame) -> list[str]:
    """One answer as the server generated it, after the end of its prompt (real text for a real model)."""
    if "sample_output" not in ok or ok["sample_output"].isna().all():
        return []
    row = ok[ok["sample_output"].notna()].iloc[0]

    def quote(text: str) -> str:
        return "> " + " ".join(str(text).split()).replace("|", "\\|")

    return ["", "#### One generated sample", "", f"{row['setup']}, {row['variant']}: the prompt ended with", "",
            quote("…" + str(row.get("sample_prompt", ""))), "", "and the server went on:", "",
            quote(row["sample_output"]), ""]


REPORT = Report(
    headline=("completed", "failed", "request_throughput", "output_throughput", "median_ttft_ms",
              "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms", "median_itl_ms", "median_e2el_ms", "request_goodput",
              "server_busy_slots_per_decode", "server_max_deferred", "token_count_disagreements"),
    plots=plots,
    sections=sections,
)
