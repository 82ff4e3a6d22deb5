"""Quality of a model's next-token distributions as ``llama-perplexity`` prints it: perplexity with its chunking
and error, and against a base model (``--kl-divergence``) the PPL ratio, KL divergence, Δp and the same top token,
each with its uncertainty and percentiles.

Chunking (llama-perplexity's ``perplexity``): the tokens are cut into ``len // n_ctx`` chunks of ``n_ctx``; the
first token of each chunk becomes BOS when the model adds one; only the second half of a chunk is scored: the
logits at positions ``n_ctx/2 … n_ctx − 2`` predict the tokens after them (``n_ctx − 1 − n_ctx/2`` per chunk).

The statistics are computed in float64 from the logits themselves, where llama-perplexity reads the base model's
log-probabilities back from its file as 16-bit codes and skips those under e⁻¹⁶: its figures can differ from these in
the last printed digit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The percentiles llama-perplexity prints (as fractions), besides the median, maximum and minimum.
KLD_PERCENTILES = (0.999, 0.99, 0.95, 0.90, 0.10, 0.05, 0.01)
DP_PERCENTILES = (0.999, 0.99, 0.95, 0.90, 0.75, 0.25, 0.10, 0.05, 0.01)


def chunks(tokens: np.ndarray, n_ctx: int, bos: int | None) -> np.ndarray:
    """The evaluation chunks, (len // n_ctx, n_ctx): consecutive slices of ``tokens``, the first of each ``bos``
    when the model adds one (``None``: it does not)."""
    n = len(tokens) // n_ctx
    out = np.asarray(tokens[: n * n_ctx], dtype=np.int64).reshape(n, n_ctx).copy()
    if bos is not None:
        out[:, 0] = bos
    return out


def scored_positions(n_ctx: int) -> slice:
    """The positions of a chunk whose logits are scored: the second half, each predicting the next token."""
    return slice(n_ctx // 2, n_ctx - 1)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last axis, in float64 (a new array)."""
    x = np.array(logits, dtype=np.float64)
    x -= x.max(axis=-1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x


@dataclass(frozen=True)
class TokenScores:
    """Per scored token: negative log-likelihood of the actual next token under the model and the base, KL
    divergence base ‖ model, Δp (model's probability of the token − base's) and whether the top tokens agree."""

    nll: np.ndarray
    nll_base: np.ndarray
    kld: np.ndarray
    p_diff: np.ndarray
    same_top: np.ndarray

    @classmethod
    def of(cls, logits: np.ndarray, base_logits: np.ndarray, targets: np.ndarray) -> TokenScores:
        """From the logits (tokens, vocab) of the model and of the base at the scored positions, and the tokens
        that followed them: one target per row."""
        if not len(logits) == len(base_logits) == len(targets):
            raise ValueError(f"TokenScores.of: {len(logits)} and {len(base_logits)} rows of logits for {len(targets)} "
                             "targets: one row per target")
        lq, lb = log_softmax(logits), log_softmax(base_logits)
        rows = np.arange(len(targets))
        nll, nll_base = -lq[rows, targets], -lb[rows, targets]
        lq -= lb  # ln(q/p), in place: the arrays are (tokens, vocab) of float64
        kld = -np.einsum("ij,ij->i", np.exp(lb, out=lb), lq)  # Σ p·(ln p − ln q), p = e^lb
        same = np.argmax(logits, axis=-1) == np.argmax(base_logits, axis=-1)
        return cls(nll, nll_base, kld, np.exp(-nll) - np.exp(-nll_base), same)

    def rows(self, which: slice) -> TokenScores:
        """The scores of the tokens ``which`` selects."""
        return TokenScores(self.nll[which], self.nll_base[which], self.kld[which], self.p_diff[which],
                           self.same_top[which])

    @classmethod
    def concat(cls, parts: list[TokenScores]) -> TokenScores:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("nll", "nll_base", "kld", "p_diff",
                                                                            "same_top")))


#: Positions scored at once: float64 log-probabilities of 256 × vocab rather than of a whole chunk.
ROWS = 256


def chunk_scores(logits: np.ndarray, base_logits: np.ndarray, chunk: np.ndarray) -> TokenScores:
    """The scores of every position of one chunk from the model's and the base's logits at each of its positions
    (n_ctx, vocab): position j predicts token j + 1, and the last predicts nothing in the chunk."""
    n = len(chunk) - 1
    return TokenScores.concat([TokenScores.of(logits[r:min(r + ROWS, n)], base_logits[r:min(r + ROWS, n)],
                                              chunk[r + 1:r + 1 + ROWS]) for r in range(0, n, ROWS)])


def mean_and_uncertainty(values: np.ndarray) -> tuple[float, float]:
    """The mean and its standard error as llama-perplexity computes them (0 for ten values or fewer)."""
    n = len(values)
    if n < 1:
        return 0.0, 0.0
    mean = float(values.sum() / n)
    var = float((values * values).sum() / n - mean * mean)
    return mean, (np.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0)


def covariance(a: np.ndarray, b: np.ndarray) -> float:
    """Covariance of the two means, as llama-perplexity estimates it (0 for fewer than ten values)."""
    n = len(a)
    if n < 10:
        return 0.0
    return float(((a * b).sum() / n - (a.sum() / n) * (b.sum() / n)) / (n - 1))


def percentile(sorted_values: np.ndarray, fraction: float) -> float:
    """llama-perplexity's percentile: linear between the two nearest of the sorted values."""
    if fraction <= 0:
        return float(sorted_values[0])
    if fraction >= 1:
        return float(sorted_values[-1])
    p = fraction * (len(sorted_values) - 1)
    i = int(p)
    p -= i
    return float((1 - p) * sorted_values[i] + p * sorted_values[min(i + 1, len(sorted_values) - 1)])


def median(sorted_values: np.ndarray) -> float:
    n = len(sorted_values)
    return float(0.5 * (sorted_values[n // 2] + sorted_values[n // 2 - 1]) if n % 2 == 0 else sorted_values[n // 2])


def summarize(s: TokenScores) -> dict[str, float]:
    """Every statistic llama-perplexity prints for ``--kl-divergence``, by name (Δp and same top as fractions)."""
    ln_q, ln_q_err = mean_and_uncertainty(s.nll)
    ln_b, ln_b_err = mean_and_uncertainty(s.nll_base)
    cov = covariance(s.nll, s.nll_base)
    ln_ratio, ln_ratio_err = ln_q - ln_b, float(np.sqrt(max(ln_q_err**2 + ln_b_err**2 - 2 * cov, 0.0)))
    kld, kld_err = mean_and_uncertainty(s.kld)
    dp, dp_err = mean_and_uncertainty(s.p_diff)
    mse, mse_err = mean_and_uncertainty(s.p_diff**2)
    rms = float(np.sqrt(mse))
    top = float(s.same_top.mean())
    n = len(s.nll)
    ks, ds = np.sort(s.kld), np.sort(s.p_diff)
    out = {"scored_tokens": n, "ppl": float(np.exp(ln_q)), "ppl_err": float(np.exp(ln_q) * ln_q_err),
           "ppl_base": float(np.exp(ln_b)), "ppl_base_err": float(np.exp(ln_b) * ln_b_err),
           "ln_ppl_ratio": ln_ratio, "ln_ppl_ratio_err": ln_ratio_err, "ppl_ratio": float(np.exp(ln_ratio)),
           "ppl_ratio_err": float(np.exp(ln_ratio) * ln_ratio_err), "mean_kld": kld, "mean_kld_err": kld_err,
           "max_kld": float(ks[-1]), "median_kld": median(ks), "min_kld": float(ks[0]),
           "mean_dp": dp, "mean_dp_err": dp_err, "rms_dp": rms, "rms_dp_err": 0.5 / rms * mse_err if rms else 0.0,
           "max_dp": float(ds[-1]), "median_dp": median(ds), "min_dp": float(ds[0]),
           "same_top": top, "same_top_err": float(np.sqrt(top * (1 - top) / (n - 1))) if n > 1 else 0.0}
    out |= {f"p{100 * f:g}_kld": percentile(ks, f) for f in KLD_PERCENTILES}
    out |= {f"p{100 * f:g}_dp": percentile(ds, f) for f in DP_PERCENTILES}
    return out
