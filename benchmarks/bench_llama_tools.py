"""Our figures against llama.cpp's own tools (``make tools``) on the same file, threads and text:

- ``bench``: the engine experiment's in-process pp512 and tg128 against ``llama-bench -p 512 -n 128 -b 512`` on the
  same file and threads, in interleaved rounds (one llama-bench run of ``-r 3`` and five samples of ours per round);
  the figure is the median of the per-round ratios (target: within 5%).
- ``perplexity``: the quality experiment's statistics (PPL, mean KLD, same top) against ``llama-perplexity
  --kl-divergence-base`` / ``--kl-divergence`` on the same source and requantized files, the same text, context
  and chunks (targets: PPL within 0.5%, mean KLD within 2% or 0.001). llama-perplexity stores the base
  log-probabilities in 16 bits (``scale × q + min``, q a uint16, scale = logit range / 65535) and sums the KLD
  only over entries whose base log-probability is above −16; ours with each of those two steps is reported
  beside, so what explains the difference is seen.
- ``batched``: llama-server's generation throughput with N slots busy (N requests at once, ``N / TPOT``, TPOT from
  the client) against ``llama-batched-bench``'s S_TG at batch N, same prompt and output lengths.

    python benchmarks/bench_llama_tools.py [--checks bench,perplexity,batched] [--weights q4_k_m] [--threads N]

The file is SmolLM2-135M-Instruct (shipped in Q4_1) requantized by our requantizer to ``--weights``. Exit code 1
when a target is missed.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.table import Figure, Table
from experiments.framework.bench import BenchConfig
from experiments.quality.measure import bos_token
from experiments.serve.client import run_load
from experiments.serve.probe import vocabulary
from experiments.serve.request import Endpoint, Request
from experiments.serve.server import EmbeddedServer
from experiments.serve.streams import Api
from experiments.serve.workload import Prompts
from experiments.shared import batched_bench
from experiments.shared.llama_tools import run_tool, tool
from experiments.shared.llamacpp import LlamaCpp, rates, time_test
from experiments.shared.packaged import cache_dir, packaged_file
from experiments.shared.text import read_text
from infer_core.measure.environment import usable_cpus
from infer_core.model.quality import TokenScores, chunk_scores, chunks, scored_positions, summarize
from infer_core.model.store import cached_requantized

MODEL = "smollm2-135m-instruct"


def llama_bench(path: Path, threads: int, n_prompt: int, n_gen: int, reps: int) -> dict[str, float]:
    """llama-bench's median t/s of pp and tg (its JSON, each repetition's time)."""
    from experiments.shared import llama_bench as lb

    cmd = lb.command(path, threads, n_prompt, n_gen, 0, 512, 512, False, "f16", "f16", reps)
    return {t.test: rates(t.timing, t.n_tokens)["tokens_per_s"] for t in lb.run(cmd, 600)}


def check_bench(table: Table, path: Path, threads: int, rounds: int) -> None:
    bench = BenchConfig(warmup=1, repeats=5, min_sample_s=1e-3, max_seconds=600)  # one call per sample
    rng = np.random.default_rng(0)
    prompt, gen = rng.integers(3, 49152, 512), rng.integers(3, 49152, 128)
    ratios: dict[str, list[float]] = {"pp": [], "tg": []}
    ours_all: dict[str, list[float]] = {"pp": [], "tg": []}
    theirs_all: dict[str, list[float]] = {"pp": [], "tg": []}
    with LlamaCpp(path, threads, 1024, 512, 512) as engine:  # llama-bench's contexts: -b 512 -ub 512
        for _ in range(rounds):
            theirs = llama_bench(path, threads, 512, 128, 3)
            ours = {"pp": rates(time_test(engine, prompt, 512, 0, bench), 512)["tokens_per_s"],
                    "tg": rates(time_test(engine, gen, 1, 0, bench), 128)["tokens_per_s"]}
            for test in ("pp", "tg"):
                ratios[test].append(ours[test] / theirs[test])
                ours_all[test].append(ours[test])
                theirs_all[test].append(theirs[test])
    for test, n in (("pp", 512), ("tg", 128)):
        table.add(Figure(f"{test}{n}: ours / llama-bench's", ratios[test], "x", ("<=", 1.05), note=(
            f"ours {np.median(ours_all[test]):.1f} t/s, llama-bench {np.median(theirs_all[test]):.1f} t/s (medians "
            f"of {rounds} interleaved rounds); and >= 0.95: {np.median(ratios[test]) >= 0.95}"),
            holds=bool(np.median(ratios[test]) >= 0.95)))


def perplexity_run(model: Path, args: list[str], threads: int, needs: str = "") -> str:
    """llama-perplexity's output, run again while the line ``needs`` is missing (``run_tool``)."""
    cmd = [str(tool("llama-perplexity")), "-m", str(model), "-t", str(threads), "-fa", "off", *args]
    proc = run_tool(cmd, lambda out: needs in out, 1200)
    if proc.returncode != 0:
        raise RuntimeError(f"llama-perplexity failed: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout + proc.stderr


def parse_kld(text: str) -> dict[str, float]:
    """llama-perplexity's --kl-divergence summary."""
    def grab(label: str) -> float:
        m = re.search(re.escape(label) + r"\s*:\s*([-\d.]+)", text)
        if not m:
            raise RuntimeError(f"llama-perplexity printed no '{label}'")
        return float(m.group(1))
    return {"ppl": grab("Mean PPL(Q)"), "ppl_base": grab("Mean PPL(base)"), "mean_kld": grab("Mean    KLD"),
            "same_top": grab("Same top p") / 100}


def rounded_like_llama_perplexity(logits: np.ndarray) -> np.ndarray:
    """Base log-probabilities as llama-perplexity stores them: ``scale × q + min`` with q a uint16."""
    x = logits.astype(np.float64)
    hi, lo = x.max(axis=-1, keepdims=True), x.min(axis=-1, keepdims=True)
    lse = np.log(np.exp(x - hi).sum(axis=-1, keepdims=True))
    scale = (hi - lo) / 65535
    return scale * np.rint((x - lo) / scale) + (lo - hi - lse)


def kld_like_llama_perplexity(logits: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Per-token KL divergence as llama-perplexity sums it, from the base log-probabilities as it stores them
    (:func:`rounded_like_llama_perplexity`): only the entries whose base log-probability is above −16
    (p > 1.1e-7) counted."""
    x = logits.astype(np.float64)
    log_q = x - x.max(axis=-1, keepdims=True)
    log_q -= np.log(np.exp(log_q).sum(axis=-1, keepdims=True))
    kept = base > -16
    return np.where(kept, np.exp(base) * (base - log_q), 0.0).sum(axis=-1)


def check_perplexity(table: Table, source: Path, files: dict[str, Path], threads: int, n_ctx: int, n_chunks: int,
                     work: Path) -> None:
    text = work / "pydoc.txt"
    text.write_text(read_text("pydoc"))
    base_file = work / "base.kld"
    common = ["-f", str(text), "-c", str(n_ctx), "-b", str(n_ctx), "--chunks", str(n_chunks)]
    perplexity_run(source, [*common, "--kl-divergence-base", str(base_file)], threads)
    pos = scored_positions(n_ctx)
    with LlamaCpp(source, threads, n_ctx, n_batch=n_ctx, n_ubatch=min(512, n_ctx), logits_all=True) as engine:
        tokens = np.array(engine.llm.tokenize(text.read_text().encode(), add_bos=True, special=False))
        cut = chunks(tokens[: n_chunks * n_ctx], n_ctx, bos_token(engine))
        base = [engine.logits(c) for c in cut]
    stored = [rounded_like_llama_perplexity(b) for b in base]  # the base as llama-perplexity stores it
    for name, path in files.items():
        theirs = parse_kld(perplexity_run(path, ["--kl-divergence-base", str(base_file), "--kl-divergence", "-c",
                                                 str(n_ctx), "-b", str(n_ctx), "--chunks", str(n_chunks)], threads,
                                              needs="Same top p"))
        with LlamaCpp(path, threads, n_ctx, n_batch=n_ctx, n_ubatch=min(512, n_ctx), logits_all=True) as engine:
            logits = [engine.logits(c) for c in cut]
        ours = summarize(TokenScores.concat([chunk_scores(q, b, c).rows(pos) for q, b, c in zip(logits, base, cut,
                                                                                               strict=True)]))
        rounded = summarize(TokenScores.concat([chunk_scores(q, b, c).rows(pos)
                                                for q, b, c in zip(logits, stored, cut, strict=True)]))
        theirs_way = float(np.mean(np.concatenate([kld_like_llama_perplexity(q[pos], b[pos])
                                                   for q, b in zip(logits, stored, strict=True)])))
        table.add(Figure(f"{name}: our PPL / llama-perplexity's", [ours["ppl"] / theirs["ppl"]], "x",
                         ("<=", 1.005), holds=ours["ppl"] / theirs["ppl"] >= 0.995,
                         note=f"{ours['ppl']:.4f} vs {theirs['ppl']:.4f}; base {ours['ppl_base']:.4f} vs "
                              f"{theirs['ppl_base']:.4f}"))
        diff = abs(ours["mean_kld"] - theirs["mean_kld"])
        bound = max(0.02 * theirs["mean_kld"], 0.001)
        table.add(Figure(f"{name}: |our mean KLD − llama-perplexity's|", [diff], " nat", ("<=", bound), note=(
            f"{ours['mean_kld']:.6f} vs {theirs['mean_kld']:.6f} ({100 * diff / theirs['mean_kld']:.2f}%); ours "
            f"with the base rounded to 16 bits as theirs: {rounded['mean_kld']:.6f}; and summed as theirs (base "
            f"log-probabilities above -16 only): {theirs_way:.6f}; same top "
            f"{100 * ours['same_top']:.2f}% vs {100 * theirs['same_top']:.2f}%")))


def check_batched(table: Table, path: Path, threads: int, batches: list[int], n_prompt: int, n_gen: int) -> None:
    reference = {b: row.tg_tokens_per_s for b, row in batched_bench.run(path, threads, n_prompt, n_gen,
                                                                         batches).items()}
    vocab = vocabulary(path)  # the serve experiment's prompts: stretches of real text, their exact token counts
    prompts = Prompts(vocab.count, np.array(vocab.tokenize(read_text("pydoc"))), vocab.detokenize)
    rng = np.random.default_rng(0)
    for n in batches:
        with EmbeddedServer(path, "bench", n_prompt + n_gen + 16, threads, 120.0, tool("llama-server"), n) as server:
            ep = Endpoint(server.url, Api.openai_completions, "bench", extra={"ignore_eos": True})
            reqs = [Request(i, *prompts(rng, n_prompt), n_gen) for i in range(3 * n)]
            outs, _, _ = run_load(ep, reqs, n, [Request(-1, *prompts(rng, n_prompt), 4)] * n)
        tpot = float(np.median([o.tpot_s for o in outs if o.ok]))
        served = n / tpot
        table.add(Figure(f"server with {n} busy slot(s): N / TPOT, over batched-bench's S_TG at B={n}",
                         [served / reference[n]], "x", note=(
                             f"{served:.1f} vs {reference[n]:.1f} t/s (median TPOT {1e3 * tpot:.2f} ms; "
                             f"{sum(not o.ok for o in outs)} failed); the server samples each token and streams it "
                             f"over HTTP, batched-bench does neither")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", default="bench,perplexity,batched")
    parser.add_argument("--weights", default="q4_k_m")
    parser.add_argument("--threads", type=int, default=usable_cpus())
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n-ctx", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=4)
    args = parser.parse_args()
    source, _ = packaged_file(MODEL)
    folder = cache_dir() / "bench-models"
    folder.mkdir(parents=True, exist_ok=True)
    path, _ = cached_requantized(folder, source, args.weights, threads=args.threads)
    table = Table(f"ours against llama.cpp's tools, {path.name}, {args.threads} threads")
    checks = args.checks.split(",")
    started = time.perf_counter()
    if "bench" in checks:
        check_bench(table, path, args.threads, args.rounds)
    if "perplexity" in checks:
        with tempfile.TemporaryDirectory() as tmp:
            q8, _ = cached_requantized(folder, source, "q8_0", threads=args.threads)
            check_perplexity(table, source, {args.weights: path, "q8_0": q8}, args.threads, args.n_ctx, args.chunks,
                             Path(tmp))
    if "batched" in checks:
        check_batched(table, path, args.threads, [1, 2, 4], 128, 64)
    print(f"({time.perf_counter() - started:.0f} s)")
    return table.finish()


if __name__ == "__main__":
    sys.exit(main())
