"""The quality experiment: a model file on real text, scored as llama-perplexity scores it, in-process from
llama.cpp's logits (no logits file): chunks of ``quality.n_ctx`` tokens, each evaluated twice, by the point's
llama.cpp context (its KV-cache types, flash attention) and by the base (the same file, f16 cache, no flash
attention); perplexity and the comparison statistics (:mod:`infer_core.model.quality`) over the second half of each
chunk, and the KL divergence per position bucket over every position (``depth.csv``)."""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from pathlib import Path

import numpy as np

from experiments.framework.bench import BenchConfig
from experiments.framework.spec import Column, ConfigError, VariantResult
from experiments.quality.schema import KEY, QualityConfig
from experiments.shared.llama_build import CACHE_TYPE_IDS, check_build
from experiments.shared.model import model_file
from infer_core.model.quality import DP_PERCENTILES, KLD_PERCENTILES, TokenScores, chunks, scored_positions, summarize

log = logging.getLogger(__name__)
ROWS = 256  # positions scored at once: float64 log-probabilities of 256 × vocab, not of a whole chunk

COLUMNS = (
    Column("text_sha256", "", "SHA-256 of the text scored (the pydoc text differs between Python versions)"),
    Column("text_tokens", "", "tokens of the whole text (the model's tokenizer, through llama.cpp)"),
    Column("chunks", "", "chunks of quality.n_ctx tokens evaluated"),
    Column("scored_tokens", "", "tokens scored: the second half of each chunk"),
    Column("ppl", "", "perplexity: exp(mean negative log-likelihood of the next token)"),
    Column("ppl_err", "", "its uncertainty, as llama-perplexity computes it"),
    Column("ppl_base", "", "the base's perplexity (same file, f16 cache, no flash attention)"),
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


def read_text(spec: str) -> str:
    """``pydoc`` (CPython's pydoc topics, sorted by topic) or a UTF-8 file's text."""
    if spec == "pydoc":
        from pydoc_data.topics import topics

        return "".join(topics[k] for k in sorted(topics))
    path = Path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{KEY}.text={spec}: cannot be read as UTF-8 text ({type(exc).__name__})") from None
    if not text.strip():
        raise ConfigError(f"{KEY}.text={spec}: the file is empty")
    return text


class Evaluator:
    """One llama.cpp context over the file, its logits kept for every position of a chunk."""

    def __init__(self, path: Path, cfg: QualityConfig, type_k: str, type_v: str, flash_attn: bool) -> None:
        import llama_cpp

        check_build()
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=cfg.n_ctx, n_batch=cfg.n_ctx,
                                   n_ubatch=min(512, cfg.n_ctx), n_threads=cfg.n_threads,
                                   n_threads_batch=cfg.n_threads, type_k=CACHE_TYPE_IDS[type_k],
                                   type_v=CACHE_TYPE_IDS[type_v], flash_attn=flash_attn, logits_all=True,
                                   verbose=False)

    def logits(self, chunk: np.ndarray) -> np.ndarray:
        """(n_ctx, vocab) float32: the next-token logits at every position of ``chunk``, from an empty cache."""
        self.llm.reset()
        self.llm.eval(chunk.tolist())
        return np.array(self.llm.scores[: len(chunk)], dtype=np.float32)

    def bos(self) -> int | None:
        """The BOS token when the model adds one (llama-perplexity puts it first in every chunk)."""
        probe = self.llm.tokenize(b"a", add_bos=True, special=False)
        return int(probe[0]) if probe and probe[0] == self.llm.token_bos() else None


def run(cfg: QualityConfig, bench: BenchConfig, seed: int) -> list[VariantResult]:
    """Score the text with the point's cache types against the f16 base, chunk by chunk."""
    path, _ = model_file(cfg, seed)
    text = read_text(cfg.text)
    base = Evaluator(path, cfg, "f16", "f16", False)
    same = (cfg.type_k.value, cfg.type_v.value, cfg.flash_attn) == ("f16", "f16", False)
    model = base if same else Evaluator(path, cfg, cfg.type_k.value, cfg.type_v.value, cfg.flash_attn)
    tokens = np.array(base.llm.tokenize(text.encode(), add_bos=True, special=False), dtype=np.int64)
    if len(tokens) < cfg.n_ctx:
        raise ConfigError(f"{KEY}.text={cfg.text}: {len(tokens)} tokens, shorter than one chunk of {KEY}.n_ctx="
                          f"{cfg.n_ctx}")
    cut = chunks(tokens[: cfg.n_tokens], cfg.n_ctx, base.bos())
    pos = scored_positions(cfg.n_ctx)
    scored, depth, eval_s = [], [], 0.0
    for i, chunk in enumerate(cut):
        log.info("chunk %d of %d", i + 1, len(cut))
        b = base.logits(chunk)
        start = time.perf_counter()
        q = b if model is base else model.logits(chunk)
        eval_s += time.perf_counter() - start
        every = TokenScores.concat([TokenScores.of(q[r:r + ROWS], b[r:r + ROWS], chunk[r + 1:r + 1 + ROWS])
                                    for r in range(0, cfg.n_ctx - 1, ROWS)])  # position j predicts token j + 1
        depth.append(every)
        scored.append(every.rows(pos))  # llama-perplexity's: the second half of the chunk
    stats = summarize(TokenScores.concat(scored))
    variant = f"K {cfg.type_k.value}, V {cfg.type_v.value}" + (", flash" if cfg.flash_attn else "")
    metrics = {"text_sha256": hashlib.sha256(text.encode()).hexdigest(), "text_tokens": len(tokens),
               "chunks": len(cut), "eval_s": eval_s, **stats}
    return [VariantResult(variant, metrics, sidecars={"depth": depth_table(depth, cfg.buckets, cfg.n_ctx)})]


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
    return (f"{results[0].variant}: PPL {m['ppl']:.3f} ± {m['ppl_err']:.3f} over {m['scored_tokens']} tokens, "
            f"ratio {m['ppl_ratio']:.4f}, KLD {m['mean_kld']:.5f}, same top {100 * m['same_top']:.1f}%")
