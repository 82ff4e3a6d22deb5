"""The quality experiment: a choice of weights (a real model requantized as llama-quantize does, or as it is), KV
cache and flash attention, on real text, scored as llama-perplexity scores it, in-process from llama.cpp's logits (no
logits file): chunks of ``quality.n_ctx`` tokens, each evaluated twice, by the choice and by the base (the model as
it is, f16 cache, no flash attention); perplexity and the comparison statistics (:mod:`infer_core.model.quality`)
over the second half of each chunk, the KL divergence per position bucket over every position (``depth.csv``), and
the choice's pp and tg speed, timed as the engine experiment times them."""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np

from experiments.framework.bench import BenchConfig
from experiments.framework.spec import Column, ConfigError, VariantResult
from experiments.quality.schema import KEY, QualityConfig
from experiments.shared.llamacpp import LlamaCpp, rates, time_test
from experiments.shared.model import Weights, model_file, read_model, source_file
from experiments.shared.packaged import PACKAGED
from experiments.shared.text import read_text
from infer_core.model.gguf_io import StoredTensor, bits_per_weight
from infer_core.model.quality import (
    DP_PERCENTILES,
    KLD_PERCENTILES,
    TokenScores,
    chunk_scores,
    chunks,
    scored_positions,
    summarize,
)

log = logging.getLogger(__name__)

COLUMNS = (
    Column("source_weights", "", "how the model as it is stores most of its matrices: every figure is relative to "
                                 "it (a Q4_1 source understates the loss of the types above 5 bits)"),
    Column("file_bytes", "B", "size of the file evaluated"),
    Column("bits_per_weight", "bit", "8 × tensor bytes / weights of the file evaluated"),
    Column("model_reused", "", "True when the requantized file was found in quality.models_dir"),
    Column("pp_tokens_per_s", "tok/s", "pp test: median prompt tokens/s (llama-bench's pp)"),
    Column("pp_tokens_per_s_std", "tok/s", "its standard deviation over the samples"),
    Column("tg_tokens_per_s", "tok/s", "tg test: median generated tokens/s (llama-bench's tg)"),
    Column("tg_tokens_per_s_std", "tok/s", "its standard deviation over the samples"),
    Column("within_max_kld", "", "True when mean_kld <= quality.max_kld"),
    Column("text_sha256", "", "SHA-256 of the text scored (the pydoc text differs between Python versions)"),
    Column("text_tokens", "", "tokens of the whole text (the model's tokenizer, through llama.cpp)"),
    Column("chunks", "", "chunks of quality.n_ctx tokens evaluated"),
    Column("scored_tokens", "", "tokens scored: the second half of each chunk"),
    Column("ppl", "", "perplexity: exp(mean negative log-likelihood of the next token)"),
    Column("ppl_err", "", "its uncertainty, as llama-perplexity computes it"),
    Column("ppl_base", "", "the base's perplexity (the model as it is, f16 cache, no flash attention)"),
    Column("ppl_base_err", "", "its uncertainty"),
    Column("ppl_ratio", "", "PPL / PPL(base)"),
    Column("ppl_ratio_err", "", "its uncertainty (the two log-perplexities' covariance included)"),
    Column("mean_kld", "nat", "mean KL divergence base ‖ model over the scored tokens"),
    Column("mean_kld_err", "nat", "its uncertainty"),
    Column("ln_ppl_ratio", "", "ln(PPL / PPL(base))"),
    Column("ln_ppl_ratio_err", "", "its uncertainty"),
    Column("max_kld", "nat", "largest KL divergence of a token"),
    Column("median_kld", "nat", "median per-token KL divergence"),
    Column("min_kld", "nat", "smallest KL divergence of a token"),
    *(Column(f"p{100 * f:g}_kld", "nat", f"{100 * f:g}th percentile of the per-token KL divergence")
      for f in KLD_PERCENTILES),
    Column("mean_dp", "", "mean Δp: model's probability of the actual next token − base's"),
    Column("mean_dp_err", "", "its uncertainty"),
    Column("rms_dp", "", "root mean square of Δp"),
    Column("rms_dp_err", "", "its uncertainty"),
    Column("max_dp", "", "largest Δp"),
    Column("median_dp", "", "median Δp"),
    Column("min_dp", "", "smallest Δp"),
    *(Column(f"p{100 * f:g}_dp", "", f"{100 * f:g}th percentile of Δp") for f in DP_PERCENTILES),
    Column("same_top", "", "share of tokens whose most likely next token is the base's"),
    Column("same_top_err", "", "its uncertainty"),
    Column("eval_s", "s", "wall time of the model's evaluation of every chunk"),
)


def bos_token(engine: LlamaCpp) -> int | None:
    """The BOS token when the model adds one (llama-perplexity puts it first in every chunk)."""
    probe = engine.llm.tokenize(b"a", add_bos=True, special=False)
    return int(probe[0]) if probe and probe[0] == engine.llm.token_bos() else None


def main_type(stored: list[StoredTensor]) -> str:
    """The type most of a file's matrices are stored in."""
    return Counter(t.kind for t in stored if len(t.dims) > 1).most_common(1)[0][0]


def _open(path: Path, cfg: QualityConfig, n_ctx: int, base: bool) -> LlamaCpp:
    try:
        return LlamaCpp(path, cfg.n_threads, n_ctx, n_batch=max(n_ctx, 512), n_ubatch=512, logits_all=True,
                        **({} if base else {"flash_attn": cfg.flash_attn, "type_k": cfg.type_k.value,
                                            "type_v": cfg.type_v.value}))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def variant(cfg: QualityConfig, source_weights: str) -> str:
    """The choice a row measures: weights, then the cache when it is not the base's."""
    weights = f"source ({source_weights})" if cfg.weights is Weights.source else cfg.weights.value
    cache = "" if (cfg.type_k.value, cfg.type_v.value) == ("f16", "f16") else \
        f", K {cfg.type_k.value} V {cfg.type_v.value}"
    return weights + (" pure" if cfg.pure and cfg.weights is not Weights.source else "") + cache + \
        (", flash" if cfg.flash_attn else "")


def speed(engine: LlamaCpp, tokens: np.ndarray, cfg: QualityConfig, bench: BenchConfig) -> tuple[dict, dict]:
    """pp and tg tokens/s of the choice on the text's first tokens (llama-bench's tests, from an empty cache)."""
    metrics, timings = {}, {}
    prompt, gen = tokens[: cfg.n_prompt], tokens[cfg.n_prompt: cfg.n_prompt + cfg.n_gen]
    tests = [("pp", prompt, len(prompt)), ("tg", gen, 1)]  # the prompt in one call (n_batch holds it)
    for test, part, size in tests:
        if len(part):
            timings[test] = time_test(engine, part, size, 0, bench)
            r = rates(timings[test], len(part))
            metrics |= {f"{test}_tokens_per_s": r["tokens_per_s"], f"{test}_tokens_per_s_std": r["tokens_per_s_std"]}
    return metrics, timings


def run(cfg: QualityConfig, bench: BenchConfig, seed: int) -> list[VariantResult]:
    """Score the text with the point's weights and cache types against the model as it is, chunk by chunk."""
    path, reused = model_file(cfg, seed)
    source = path if cfg.made else source_file(cfg)[0]
    _, stored = read_model(path, KEY)
    source_weights = PACKAGED[cfg.model].source_weights if cfg.packaged else main_type(read_model(source, KEY)[1])
    text = read_text(cfg.text, f"{KEY}.text")
    n_ctx = max(cfg.n_ctx, cfg.n_prompt + cfg.n_gen)
    base = _open(source, cfg, n_ctx, base=True)
    same = path == source and (cfg.type_k.value, cfg.type_v.value, cfg.flash_attn) == ("f16", "f16", False)
    model = base if same else _open(path, cfg, n_ctx, base=False)
    tokens = np.array(base.llm.tokenize(text.encode(), add_bos=True, special=False), dtype=np.int64)
    if len(tokens) < max(cfg.n_ctx, cfg.n_prompt + cfg.n_gen):
        raise ConfigError(f"{KEY}.text={cfg.text}: {len(tokens)} tokens, shorter than one chunk of {KEY}.n_ctx="
                          f"{cfg.n_ctx} (or the {cfg.n_prompt + cfg.n_gen} tokens of the speed tests)")
    timed, timings = speed(model, tokens, cfg, bench)
    cut = chunks(tokens[: cfg.n_tokens], cfg.n_ctx, bos_token(base))
    pos = scored_positions(cfg.n_ctx)
    scored, depth, eval_s = [], [], 0.0
    for i, chunk in enumerate(cut):
        log.info("chunk %d of %d", i + 1, len(cut))
        b = base.logits(chunk)
        start = time.perf_counter()
        q = b if model is base else model.logits(chunk)
        eval_s += time.perf_counter() - start
        every = chunk_scores(q, b, chunk)
        depth.append(every)
        scored.append(every.rows(pos))  # llama-perplexity's: the second half of the chunk
    for engine in {id(base): base, id(model): model}.values():
        engine.close()
    stats = summarize(TokenScores.concat(scored))
    metrics = {"source_weights": source_weights, "file_bytes": path.stat().st_size,
               "bits_per_weight": bits_per_weight(stored), "model_reused": reused, **timed,
               "within_max_kld": bool(stats["mean_kld"] <= cfg.max_kld),
               "text_sha256": hashlib.sha256(text.encode()).hexdigest(), "text_tokens": len(tokens),
               "chunks": len(cut), "eval_s": eval_s, **stats}
    return [VariantResult(variant(cfg, source_weights), metrics, timings=timings,
                          sidecars={"depth": depth_table(depth, cfg.buckets, cfg.n_ctx)})]


def depth_table(depth: list[TokenScores], buckets: list[int], n_ctx: int) -> dict[str, list]:
    """Per position bucket (positions of the predicting token in its chunk): tokens, mean KLD, same top."""
    kld = np.stack([d.kld for d in depth])  # (chunks, n_ctx − 1)
    top = np.stack([d.same_top for d in depth])
    edges = [b for b in buckets if b < n_ctx - 1] + [n_ctx - 1]
    rows = {"first_position": [], "last_position": [], "tokens": [], "mean_kld": [], "same_top": []}
    for lo, hi in itertools.pairwise(edges):
        rows["first_position"].append(lo)
        rows["last_position"].append(hi - 1)
        rows["tokens"].append(int(kld[:, lo:hi].size))
        rows["mean_kld"].append(float(kld[:, lo:hi].mean()))
        rows["same_top"].append(float(top[:, lo:hi].mean()))
    return rows


def summary(results: list[VariantResult]) -> str:
    m = results[0].metrics
    speeds = "".join(f", {t} {m[f'{t}_tokens_per_s']:.1f} t/s" for t in ("pp", "tg") if f"{t}_tokens_per_s" in m)
    return (f"{results[0].variant}: PPL {m['ppl']:.3f} ± {m['ppl_err']:.3f} over {m['scored_tokens']} tokens, "
            f"ratio {m['ppl_ratio']:.4f}, KLD {m['mean_kld']:.5f}, same top {100 * m['same_top']:.1f}%{speeds}")
