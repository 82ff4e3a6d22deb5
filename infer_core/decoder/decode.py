"""Token-by-token generation under each KV strategy, and the closed-form counts it must match.

Inputs are teacher-forced: ``x`` (B, prompt_len + n, d_model) holds every token's
embedding, the prompt is prefilled in one pass, and the n remaining tokens are fed one
at a time. The output for each generated token is the last block's hidden state at its
position, so every strategy must return the same (B, n, d_model) array as one full
causal pass over ``x`` (:func:`reference_outputs`).

The ``expected_*`` formulas are written from the algorithm, not from the code: with p prompt
tokens and n generated ones, a token at position t (1-based) attends to t keys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from infer_core.decoder.kv_cache import ConcatCache, PreallocCache, Strategy
from infer_core.decoder.model import Decoder, DecoderShape, decode_step, forward
from infer_core.measure.timing import TimeBudgetExceeded


@dataclass
class GenerationCounts:
    """What one generation did, observed where it happens: tokens sent through each layer's K/V
    projection (every layer projects the same tokens) and bytes the cache wrote."""

    kv_projections: int = 0
    cache_bytes_written: int = 0


def make_cache(strategy: Strategy | str, shape: DecoderShape, batch: int, max_len: int
               ) -> ConcatCache | PreallocCache | None:
    """The cache a strategy uses (``None`` for ``recompute``)."""
    strategy = Strategy(strategy)
    if strategy is Strategy.concat:
        return ConcatCache(shape, batch)
    if strategy is Strategy.prealloc:
        return PreallocCache(shape, batch, max_len)
    return None


def generate(
    model: Decoder,
    x: np.ndarray,
    prompt_len: int,
    strategy: Strategy | str,
    *,
    cache: ConcatCache | PreallocCache | None = None,
    counts: GenerationCounts | None = None,
    deadline: float | None = None,
) -> np.ndarray:
    """Prefill ``x[:, :prompt_len]``, then generate the remaining tokens one at a time.

    ``cache`` may be passed in to keep its allocation out of a timed region (it is reset
    here); otherwise one is made. ``counts``, if given, is filled as the run goes. ``deadline``
    is a ``time.perf_counter()`` value after which :class:`TimeBudgetExceeded` is raised.
    Returns the outputs of the generated tokens, (B, n, d_model).
    """
    strategy = Strategy(strategy)
    b, total, d = x.shape
    n = total - prompt_len
    if n < 1 or prompt_len < 0:
        raise ValueError(f"x has {total} tokens: need prompt_len={prompt_len} plus at least one more")
    counts = counts if counts is not None else GenerationCounts()
    out = np.empty((b, n, d), dtype=x.dtype)
    if strategy is Strategy.recompute:
        for i in range(n):
            out[:, i] = forward(model, x[:, : prompt_len + i + 1])[:, -1]
            counts.kv_projections += prompt_len + i + 1
            _check_deadline(deadline, i, n, strategy)
        return out
    if cache is None:
        cache = make_cache(strategy, model.shape, b, total)
    cache.reset()
    if prompt_len:
        forward(model, x[:, :prompt_len], cache)
        counts.kv_projections += prompt_len
    for i in range(n):
        decode_step(model, x[:, prompt_len + i], cache, out=out[:, i])
        counts.kv_projections += 1
        _check_deadline(deadline, i, n, strategy)
    counts.cache_bytes_written += cache.bytes_written
    return out


def _check_deadline(deadline: float | None, step: int, n: int, strategy: Strategy) -> None:
    if deadline is not None and time.perf_counter() > deadline:
        raise TimeBudgetExceeded(f"{strategy.value} passed its time budget at token {step + 1} of {n}")


def reference_outputs(model: Decoder, x: np.ndarray, prompt_len: int) -> np.ndarray:
    """What every strategy must produce: one full causal pass in float64, generated positions only."""
    ref = model.astype("float64")
    return forward(ref, x.astype(np.float64))[:, prompt_len:]


def _sum_t(p: int, n: int) -> int:
    """Σ t for t = p+1 .. p+n."""
    return n * p + n * (n + 1) // 2


def _sum_t2(p: int, n: int) -> int:
    """Σ t² for t = p+1 .. p+n."""
    def cube(m: int) -> int:  # Σ t² for t = 1 .. m
        return m * (m + 1) * (2 * m + 1) // 6
    return cube(p + n) - cube(p)


def expected_kv_projections(strategy: Strategy | str, prompt_len: int, n: int) -> int:
    """K/V token projections per layer: n·p + n(n+1)/2 without a cache (every step projects all its
    tokens again), p + n with one (each token once)."""
    if Strategy(strategy) is Strategy.recompute:
        return _sum_t(prompt_len, n)
    return prompt_len + n


def expected_cache_bytes_copied(
    strategy: Strategy | str, shape: DecoderShape, batch: int, prompt_len: int, n: int
) -> int:
    """Bytes written into the cache over a run, K and V of all layers: ``prealloc`` writes each token
    once (p + n); ``concat`` writes the prompt, then at step i copies all p + i cached tokens
    (p + n·p + n(n+1)/2); ``recompute`` keeps no cache."""
    token = 2 * shape.n_layers * batch * shape.d_kv * shape.itemsize
    strategy = Strategy(strategy)
    if strategy is Strategy.recompute:
        return 0
    if strategy is Strategy.concat:
        return token * (prompt_len + _sum_t(prompt_len, n))
    return token * (prompt_len + n)


def expected_flops(strategy: Strategy | str, shape: DecoderShape, batch: int, prompt_len: int, n: int) -> int:
    """Useful matrix FLOPs of a run (2 per multiply-add), per sequence and layer, times batch and layers.

    A token's projections cost P = 2·d·(d + 2·d_kv) + 2·d²; a query at position t costs 4·d·t
    (QKᵀ and PV over t keys). A causal pass over t tokens: t·P + 2·d·t(t+1). Without a cache the
    steps are passes over t = p+1 .. p+n tokens; with one, a prefill pass over p, then one
    token at t = p+1 .. p+n: (p + n)·P + 2·d·p(p+1) + 4·d·Σt. Masked scores a kernel may compute
    anyway are not counted.
    """
    d, p = shape.d_model, prompt_len
    proj = 2 * d * (d + 2 * shape.d_kv) + 2 * d * d
    if Strategy(strategy) is Strategy.recompute:
        per_sequence = proj * _sum_t(p, n) + 2 * d * (_sum_t2(p, n) + _sum_t(p, n))
    else:
        per_sequence = proj * (p + n) + 2 * d * p * (p + 1) + 4 * d * _sum_t(p, n)
    return batch * shape.n_layers * per_sequence


def expected_bytes_moved(strategy: Strategy | str, shape: DecoderShape, batch: int, prompt_len: int, n: int) -> int:
    """The least memory traffic of a run: every forward call reads all weights once and the keys and
    values of the tokens it attends to once (t tokens at position t), plus the cache writes.

    Without a cache: n calls over t = p+1 .. p+n tokens. With one: a prefill call over p tokens
    (if p > 0), then n calls at t = p+1 .. p+n.
    """
    p = prompt_len
    weights = shape.n_layers * shape.d_model * (2 * shape.d_model + 2 * shape.d_kv) * shape.itemsize
    kv_token = 2 * shape.n_layers * batch * shape.d_kv * shape.itemsize
    reads = n * weights + kv_token * _sum_t(p, n)
    if Strategy(strategy) is not Strategy.recompute and p:
        reads += weights + kv_token * p
    return reads + expected_cache_bytes_copied(strategy, shape, batch, p, n)
