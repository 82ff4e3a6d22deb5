"""llama-perplexity's statistics on two fixed logit arrays, against a direct float64 computation written here:
perplexity's chunking and scored positions, PPL and its error, the PPL ratio with the covariance of the two
log-perplexities, KL divergence, Δp and the same top token, with their uncertainties and percentiles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from infer_core.model.quality import TokenScores, chunks, scored_positions, summarize

N_CTX, N_CHUNK, VOCAB, BOS = 64, 4, 50, 1


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(11)
    tokens = rng.integers(2, VOCAB, N_CHUNK * N_CTX + 17)  # a tail shorter than a chunk is not scored
    base = rng.standard_normal((N_CHUNK, N_CTX, VOCAB)) * 3
    model = base + rng.standard_normal((N_CHUNK, N_CTX, VOCAB)) * 0.5  # a perturbed copy: a quantized model
    return tokens, model, base


def direct(tokens, model, base) -> dict[str, float]:
    """Every statistic by its definition, one scored token at a time, in float64."""
    nll, nll_b, kld, dp, top = [], [], [], [], []
    for c in range(N_CHUNK):
        chunk = list(tokens[c * N_CTX:(c + 1) * N_CTX])
        chunk[0] = BOS
        for j in range(N_CTX // 2, N_CTX - 1):
            target = chunk[j + 1]
            zq = [math.exp(v - max(model[c, j])) for v in model[c, j]]
            zb = [math.exp(v - max(base[c, j])) for v in base[c, j]]
            pq, pb = [z / sum(zq) for z in zq], [z / sum(zb) for z in zb]
            nll.append(-math.log(pq[target]))
            nll_b.append(-math.log(pb[target]))
            kld.append(sum(b * (math.log(b) - math.log(q)) for b, q in zip(pb, pq, strict=True)))
            dp.append(pq[target] - pb[target])
            top.append(int(np.argmax(model[c, j]) == np.argmax(base[c, j])))
    n = len(nll)

    def mean_err(xs):
        m = sum(xs) / n
        return m, math.sqrt((sum(x * x for x in xs) / n - m * m) / (n - 1))

    def pct(xs, f):
        xs, p = sorted(xs), f * (n - 1)
        i = int(p)
        return (1 - (p - i)) * xs[i] + (p - i) * xs[i + 1]

    (lq, eq), (lb, eb) = mean_err(nll), mean_err(nll_b)
    cov = (sum(a * b for a, b in zip(nll, nll_b, strict=True)) / n - lq * lb) / (n - 1)
    ratio_err = math.sqrt(eq**2 + eb**2 - 2 * cov)
    mse, mse_err = mean_err([d * d for d in dp])
    same = sum(top) / n
    return {"scored_tokens": n, "ppl": math.exp(lq), "ppl_err": math.exp(lq) * eq, "ppl_base": math.exp(lb),
            "ppl_base_err": math.exp(lb) * eb, "ln_ppl_ratio": lq - lb, "ln_ppl_ratio_err": ratio_err,
            "ppl_ratio": math.exp(lq - lb), "ppl_ratio_err": math.exp(lq - lb) * ratio_err,
            "mean_kld": mean_err(kld)[0], "mean_kld_err": mean_err(kld)[1], "max_kld": max(kld),
            "min_kld": min(kld), "median_kld": pct(kld, 0.5), "p99_kld": pct(kld, 0.99), "p95_kld": pct(kld, 0.95),
            "p90_kld": pct(kld, 0.90), "p10_kld": pct(kld, 0.10), "p5_kld": pct(kld, 0.05), "p1_kld": pct(kld, 0.01),
            "p99.9_kld": pct(kld, 0.999), "mean_dp": mean_err(dp)[0], "mean_dp_err": mean_err(dp)[1],
            "rms_dp": math.sqrt(mse), "rms_dp_err": 0.5 / math.sqrt(mse) * mse_err, "max_dp": max(dp),
            "min_dp": min(dp), "median_dp": pct(dp, 0.5), "p75_dp": pct(dp, 0.75), "p25_dp": pct(dp, 0.25),
            "p99.9_dp": pct(dp, 0.999), "p99_dp": pct(dp, 0.99), "p95_dp": pct(dp, 0.95), "p90_dp": pct(dp, 0.90),
            "p10_dp": pct(dp, 0.10), "p5_dp": pct(dp, 0.05), "p1_dp": pct(dp, 0.01),
            "same_top": same, "same_top_err": math.sqrt(same * (1 - same) / (n - 1))}


def test_chunking_takes_whole_chunks_and_scores_their_second_half(case):
    tokens, _, _ = case
    got = chunks(tokens, N_CTX, BOS)
    assert got.shape == (N_CHUNK, N_CTX) and (got[:, 0] == BOS).all()
    assert (got[:, 1:] == tokens[:N_CHUNK * N_CTX].reshape(N_CHUNK, N_CTX)[:, 1:]).all()
    assert scored_positions(N_CTX) == slice(32, 63)  # 31 tokens a chunk: n_ctx − 1 − n_ctx/2
    assert chunks(tokens, N_CTX, None)[1, 0] == tokens[N_CTX]  # a model without BOS keeps its token


def test_every_statistic_equals_its_direct_computation(case):
    tokens, model, base = case
    cut, pos = chunks(tokens, N_CTX, BOS), scored_positions(N_CTX)
    scores = TokenScores.concat([TokenScores.of(model[c, pos], base[c, pos], cut[c, pos.start + 1:pos.stop + 1])
                                 for c in range(N_CHUNK)])
    got, want = summarize(scores), direct(tokens, model, base)
    assert got["scored_tokens"] == want["scored_tokens"] == N_CHUNK * 31
    assert set(want) <= set(got)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert 0 < got["same_top"] < 1 and got["mean_kld"] > 0 and got["ppl_ratio"] != 1
