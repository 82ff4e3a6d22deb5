"""Token-by-token generation under each KV strategy, and the analytic counts it must match.

Inputs are teacher-forced: ``x`` (B, prompt_len + n, d_model) holds every token's
embedding, the prompt is prefilled in one pass, and the n remaining tokens are fed one
at a time. The output for each generated token is the last block's hidden state at its
position, so every strategy must return the same (B, n, d_model) array as one full
causal pass over ``x`` (:func:`reference_outputs`).
"""

from __future__ import annotations

import time

import numpy as np

from infer_core.attention import QUERY_CHUNK, Counts, Decoder, DecoderShape, decode_step, forward
from infer_core.kv_cache import ConcatCache, PreallocCache, Strategy
from infer_core.timing import TimeBudgetExceeded


def make_cache(
    strategy: Strategy, shape: DecoderShape, batch: int, max_len: int, counts: Counts | None = None
) -> ConcatCache | PreallocCache | None:
    """The cache a strategy uses (``None`` for ``recompute``)."""
    strategy = Strategy(strategy)
    if strategy is Strategy.concat:
        return ConcatCache(shape, batch, counts)
    if strategy is Strategy.prealloc:
        return PreallocCache(shape, batch, max_len, counts)
    return None


def generate(
    model: Decoder,
    x: np.ndarray,
    prompt_len: int,
    strategy: Strategy | str,
    *,
    cache: ConcatCache | PreallocCache | None = None,
    counts: Counts | None = None,
    deadline: float | None = None,
) -> np.ndarray:
    """Prefill ``x[:, :prompt_len]``, then generate the remaining tokens one at a time.

    ``cache`` may be passed in to keep its allocation out of a timed region (it is reset
    here); otherwise one is made. ``counts`` is filled as the run goes. ``deadline`` is a
    ``time.perf_counter()`` value after which :class:`TimeBudgetExceeded` is raised.
    Returns the outputs of the generated tokens, (B, n, d_model).
    """
    strategy = Strategy(strategy)
    b, total, d = x.shape
    n = total - prompt_len
    if n < 1 or prompt_len < 0:
        raise ValueError(f"x has {total} tokens: need prompt_len={prompt_len} plus at least one more")
    out = np.empty((b, n, d), dtype=x.dtype)
    if strategy is Strategy.recompute:
        for i in range(n):
            out[:, i] = forward(model, x[:, : prompt_len + i + 1], counts=counts)[:, -1]
            _check_deadline(deadline, i, n, strategy)
        return out
    if cache is None:
        cache = make_cache(strategy, model.shape, b, total, counts)
    cache.reset()
    if prompt_len:
        forward(model, x[:, :prompt_len], cache, counts)
    for i in range(n):
        decode_step(model, x[:, prompt_len + i], cache, counts, out=out[:, i])
        _check_deadline(deadline, i, n, strategy)
    return out


def _check_deadline(deadline: float | None, step: int, n: int, strategy: Strategy) -> None:
    if deadline is not None and time.perf_counter() > deadline:
        raise TimeBudgetExceeded(f"{strategy.value} passed its time budget at token {step + 1} of {n}")


def reference_outputs(model: Decoder, x: np.ndarray, prompt_len: int) -> np.ndarray:
    """What every strategy must produce: one full causal pass in float64, generated positions only."""
    ref = model.astype("float64")
    return forward(ref, x.astype(np.float64))[:, prompt_len:]


def expected_kv_projections(strategy: Strategy | str, prompt_len: int, n: int) -> int:
    """K/V token projections per layer (GUIDE §6): n*p + n(n+1)/2 without a cache, p + n with one."""
    if Strategy(strategy) is Strategy.recompute:
        return n * prompt_len + n * (n + 1) // 2
    return prompt_len + n


def expected_cache_bytes_copied(
    strategy: Strategy | str, shape: DecoderShape, batch: int, prompt_len: int, n: int
) -> int:
    """Bytes written into the cache over a run, K and V of all layers.

    ``concat`` rewrites the whole cache at every append (p tokens at prefill, then
    p + i at step i); ``prealloc`` writes only the new tokens; ``recompute`` has no cache.
    """
    token_bytes = 2 * shape.n_layers * batch * shape.d_kv * shape.itemsize
    strategy = Strategy(strategy)
    if strategy is Strategy.recompute:
        return 0
    if strategy is Strategy.concat:
        return token_bytes * (prompt_len + n * prompt_len + n * (n + 1) // 2)
    return token_bytes * (prompt_len + n)


def expected_flops(
    strategy: Strategy | str, shape: DecoderShape, batch: int, prompt_len: int, n: int
) -> int:
    """Matrix-multiply FLOPs of a run (2 per multiply-add), as the code performs them.

    Per token and layer the projections cost 2·d·(d + 2·d_kv) + 2·d². Attention of a chunk
    of queries ending at position ``kend`` costs 4·d·kend per query (QK^T and PV): the
    causal pass computes each query chunk of ``QUERY_CHUNK`` against all keys up to the
    chunk's end and masks the rest.
    """
    d, dkv = shape.d_model, shape.d_kv
    proj = 2 * d * (d + 2 * dkv) + 2 * d * d

    def call(offset: int, tq: int) -> int:  # one forward() over tq tokens after `offset` cached
        attn = sum(
            4 * d * (c1 - c0) * (offset + c1)
            for c0 in range(0, tq, QUERY_CHUNK)
            for c1 in [min(tq, c0 + QUERY_CHUNK)]
        )
        return batch * shape.n_layers * (tq * proj + attn)

    if Strategy(strategy) is Strategy.recompute:
        return sum(call(0, prompt_len + i + 1) for i in range(n))
    prefill = call(0, prompt_len) if prompt_len else 0
    return prefill + sum(call(prompt_len + i, 1) for i in range(n))


def expected_bytes_read(strategy: Strategy | str, shape: DecoderShape, batch: int, prompt_len: int, n: int) -> int:
    """Bytes read at the least over a run: every layer's weights once per forward call, plus
    the keys and values each attention reads (a query chunk reads them up to its last position)."""
    weights = shape.n_layers * shape.d_model * (2 * shape.d_model + 2 * shape.d_kv) * shape.itemsize
    kv_token = 2 * batch * shape.d_kv * shape.itemsize * shape.n_layers  # K and V of one position

    def call(offset: int, tq: int) -> int:
        ends = (offset + min(tq, c0 + QUERY_CHUNK) for c0 in range(0, tq, QUERY_CHUNK))
        return weights + kv_token * sum(ends)

    if Strategy(strategy) is Strategy.recompute:
        return sum(call(0, prompt_len + i + 1) for i in range(n))
    prefill = call(0, prompt_len) if prompt_len else 0
    return prefill + sum(call(prompt_len + i, 1) for i in range(n))
