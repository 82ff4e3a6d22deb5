"""Our requantizer against llama.cpp's on the real SmolLM2-135M (shipped in Q4_1), for each file type of
``sweep=quality_formats``: the same source requantized by ``infer_core.model.requantize`` and by llama.cpp's own
``llama_model_quantize`` (``--allow-requantize``, no importance matrix), both scored against the source on the same
chunks of real text, as ``experiment=quality`` scores them.

    python benchmarks/bench_requantize.py [--types q8_0,q6_k,...] [--tokens 2048] [--n-ctx 512]

Targets, per file type: every tensor of the same type in both files, and our mean KLD no worse than llama.cpp's file's
+ 5% (or + 0.001 absolute, whichever is larger). Reported: the KLDs, the PPL ratios, the same-top shares, and how
long each requantizer took (ours is NumPy; its K-quant search is not llama.cpp's, its results are block-exact for
the legacy types). Exit code 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from gguf import GGUFReader

from benchmarks.table import Figure, Table
from experiments.quality.measure import bos_token
from experiments.shared.llamacpp import LlamaCpp, llamacpp_quantize
from experiments.shared.packaged import packaged_file
from experiments.shared.text import read_text
from infer_core.measure.environment import usable_cpus
from infer_core.model.quality import TokenScores, chunk_scores, chunks, scored_positions, summarize
from infer_core.model.recipes import FILE_TYPES
from infer_core.model.requantize import requantize_gguf

TYPES = "q8_0,q6_k,q5_k_m,q4_k_m,q4_0,q3_k_m,q2_k"


def types(path: Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name.lower() for t in GGUFReader(path).tensors}


def score(path: Path, cut: np.ndarray, base: list[np.ndarray], n_ctx: int, threads: int) -> dict[str, float]:
    """llama-perplexity's statistics of ``path`` against the base logits of each chunk (the second halves)."""
    pos = scored_positions(n_ctx)
    with LlamaCpp(path, threads, n_ctx, n_batch=n_ctx, n_ubatch=min(512, n_ctx), logits_all=True) as engine:
        parts = [chunk_scores(engine.logits(chunk), b, chunk).rows(pos) for chunk, b in zip(cut, base, strict=True)]
    return summarize(TokenScores.concat(parts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--types", default=TYPES)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--n-ctx", type=int, default=512)
    args = parser.parse_args()
    threads = usable_cpus()
    source, _ = packaged_file("smollm2-135m-instruct")
    table = Table(f"our requantizer against llama.cpp's, {source.name}, {args.tokens} tokens of pydoc text, "
                  f"{threads} threads")
    with LlamaCpp(source, threads, args.n_ctx, n_batch=args.n_ctx, n_ubatch=min(512, args.n_ctx),
                  logits_all=True) as engine:
        tokens = np.array(engine.llm.tokenize(read_text("pydoc").encode(), add_bos=True, special=False))
        cut = chunks(tokens[: args.tokens], args.n_ctx, bos_token(engine))
        base = [engine.logits(chunk) for chunk in cut]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.types.split(","):
            ours, theirs = Path(tmp) / f"ours-{name}.gguf", Path(tmp) / f"theirs-{name}.gguf"
            start = time.perf_counter()
            requantize_gguf(source, ours, name, threads=threads)
            ours_s = time.perf_counter() - start
            start = time.perf_counter()
            llamacpp_quantize(source, theirs, FILE_TYPES[name].ftype, threads=threads)
            theirs_s = time.perf_counter() - start
            a, b = types(ours), types(theirs)
            differ = [k for k in a if a[k] != b.get(k)]
            mine, ref = (score(p, cut, base, args.n_ctx, threads) for p in (ours, theirs))
            bound = max(0.05 * ref["mean_kld"], 0.001)
            same = "all equal" if not differ else f"{len(differ)} differ, first {differ[0]}"
            note = (f"ours {mine['mean_kld']:.5f} ± {mine['mean_kld_err']:.5f}, llama.cpp's {ref['mean_kld']:.5f} ± "
                    f"{ref['mean_kld_err']:.5f}; PPL ratio {mine['ppl_ratio']:.4f} vs {ref['ppl_ratio']:.4f}; same "
                    f"top {100 * mine['same_top']:.1f}% vs {100 * ref['same_top']:.1f}%; tensor types {same} "
                    f"({len(a)}); {ours.stat().st_size} vs {theirs.stat().st_size} bytes")
            table.add(Figure(f"{name}: our mean KLD − llama.cpp's", mine["mean_kld"] - ref["mean_kld"], " nat",
                             ("<=", bound), holds=not differ, note=note))
            table.add(Figure(f"{name}: requantizing, ours / llama.cpp's", ours_s / theirs_s, "x",
                             note=f"{ours_s:.1f} s vs {theirs_s:.1f} s"))
    return table.finish()


if __name__ == "__main__":
    sys.exit(main())
