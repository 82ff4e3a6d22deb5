"""Paged KV cache against a contiguous one: decode attention and a whole decode step, interleaved.

    python benchmarks/bench_paged.py [--rounds 15] [--context 2048] [--block 16]

One sequence of ``--context`` cached tokens, d_model 4096, 32 heads of 128 (no GQA), float32, one layer,
every CPU this process may use for BLAS. The pool is fragmented the way a serving pool is after churn: the
sequence's blocks are taken from a shuffled free list, so no two neighbours in its table sit side by side.

1. Decode attention: paged (``paged_decode_attention``: one product per block into a score buffer, softmax,
   P·V per block) / contiguous (the prealloc cache's K and V, one product each): target <= 1.5.
2. The whole decode step with the projections: ``paged_decode_step`` / ``decode_step`` over the prealloc
   cache: target <= 1.1.

Both sides are checked equal (<= 1e-5 relative) before timing. Each figure is the median of per-round
ratios with their quartiles (``benchmarks/table.py``). Exit code 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.table import Figure, Table
from infer_core.attention import DecoderShape, attend, decode_step, init_decoder
from infer_core.environment import usable_cpus
from infer_core.kv_cache import PreallocCache
from infer_core.paged import PagedKVCache, paged_decode_attention, paged_decode_step
from infer_core.timing import measure_interleaved, paired_ratios

D_MODEL, HEADS = 4096, 32


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--block", type=int, default=16)
    args = parser.parse_args()
    n, bs, threads = args.context, args.block, usable_cpus()
    table = Table(f"Paged vs contiguous KV cache: context {n}, block {bs}, d_model {D_MODEL}, {HEADS} heads, "
                  f"float32, {threads} BLAS threads")
    rng = np.random.default_rng(0)
    shape = DecoderShape(D_MODEL, HEADS, HEADS, 1)
    model = init_decoder(shape, rng)
    dh = shape.d_head
    x = rng.standard_normal((n + 1, D_MODEL), dtype=np.float32) * np.float32(0.1)

    prealloc = PreallocCache(shape, 1, n + 1)
    qkv = (x[:n] @ model.layers[0].w_qkv)[:, D_MODEL:]  # the cached tokens' K and V columns
    prealloc.append(0, qkv.T[None])
    paged = PagedKVCache(n // bs + 2, bs, HEADS, dh)
    np.random.default_rng(1).shuffle(paged.free_blocks)  # a fragmented pool
    paged.add(0)
    paged.extend(0, n)
    kv = qkv.reshape(n, 2, HEADS, dh).transpose(1, 2, 0, 3)  # (2, heads, n, d_head)
    paged.write(0, 0, 0, kv[0], kv[1])
    table_blocks = paged.tables[0]
    adjacent = sum(b - a == 1 for a, b in itertools.pairwise(table_blocks))

    q = rng.standard_normal((1, HEADS, dh), dtype=np.float32) * np.float32(dh**-0.5)  # scaled as a model's
    view = prealloc.kv[0, :, :, :, :, :n]  # (1, 2, heads, d_head, n)

    def contiguous_attention() -> np.ndarray:
        return attend(q.reshape(1, HEADS, 1, dh) @ view[:, 0], view[:, 1])

    def paged_attention() -> np.ndarray:
        return paged_decode_attention(paged, [0], q, scale=1.0)

    step_x = x[n:n + 1]

    def prealloc_step() -> np.ndarray:
        prealloc.truncate(n)
        return decode_step(model, step_x, prealloc)

    def paged_step() -> np.ndarray:
        return paged_decode_step(model, step_x, paged, [0])

    with threadpool_limits(threads, user_api="blas"):
        ref, got = contiguous_attention().reshape(HEADS, dh), paged_attention()[0]
        err_a = float(np.abs(ref - got).max() / np.abs(ref).max())
        t = measure_pair(contiguous_attention, paged_attention, args.rounds)
        table.add(Figure("decode attention: paged / contiguous", t["ratio"], "x", ("<=", 1.5), holds=err_a <= 1e-5,
                         note=f"paged {t['b'] * 1e3:.2f} ms, contiguous {t['a'] * 1e3:.2f} ms; {len(table_blocks)} "
                              f"blocks, {adjacent} adjacent pairs; rel. diff {err_a:.1e}"))
        paged.extend(0, 1)  # the step's token: it rewrites the same slot on every call, as prealloc's does
        ref, got = prealloc_step(), paged_step()
        err_s = float(np.abs(ref - got).max() / np.abs(ref).max())
        t = measure_pair(prealloc_step, paged_step, args.rounds)
        table.add(Figure("whole decode step: paged / prealloc", t["ratio"], "x", ("<=", 1.1), holds=err_s <= 1e-5,
                         note=f"paged {t['b'] * 1e3:.2f} ms, prealloc {t['a'] * 1e3:.2f} ms; rel. diff {err_s:.1e}"))
    return table.finish()


def measure_pair(a: Callable[[], object], b: Callable[[], object], rounds: int) -> dict:
    """``b`` against ``a``, interleaved: per-round ratios b / a and both medians."""
    t = measure_interleaved({"a": a, "b": b}, repeats=rounds)
    return {"ratio": paired_ratios(t["b"], t["a"]), "a": t["a"].median, "b": t["b"].median}


if __name__ == "__main__":
    sys.exit(main())
