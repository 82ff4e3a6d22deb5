"""Paged KV cache against a contiguous one: decode attention and a whole decode step, interleaved.

    python benchmarks/bench_paged.py [--rounds 15] [--context 2048] [--block 16]

Sequences of ``--context`` cached tokens, d_model 4096, 32 heads of 128 (no GQA), float32, one layer, every
CPU this process may use for BLAS. The pool is used the way a serving pool is: four sequences grow together,
a block at a time, while short requests come and go between them (taking blocks, then freeing them).

1. Decode attention of one of them: paged (``paged_decode_attention``: one product per window of its blocks,
   the other columns masked out) / contiguous (the prealloc cache's K and V, one product each): target <= 1.5.
2. Decode attention of the four as one batch: paged / contiguous (a batch of four prealloc caches): <= 1.5.
3. Reported, not judged: the one sequence when its blocks lie scattered, every 8th block of a pool whose
   other blocks idle sequences hold (a nearly full pool): the cost of paging when locality is lost.
4. The whole decode step with the projections: ``paged_decode_step`` / ``decode_step`` over the prealloc
   cache: target <= 1.1.

Both sides are checked equal (<= 1e-5 relative) before timing. Each figure is the median of per-round
ratios with their quartiles (``benchmarks/table.py``). Exit code 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.table import Figure, Table
from infer_core.decoder.kv_cache import PreallocCache
from infer_core.decoder.model import DecoderShape, attend, decode_step, init_decoder
from infer_core.measure.environment import usable_cpus
from infer_core.measure.timing import measure_interleaved, paired_ratios
from infer_core.serving.paged import PagedKVCache, paged_decode_attention, paged_decode_step, windows

D_MODEL, HEADS, BATCH = 4096, 32, 4
D_HEAD = D_MODEL // HEADS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--block", type=int, default=16)
    args = parser.parse_args()
    n, bs, threads, dh = args.context, args.block, usable_cpus(), D_HEAD
    table = Table(f"Paged vs contiguous KV cache: context {n}, block {bs}, d_model {D_MODEL}, {HEADS} heads, "
                  f"float32, {threads} BLAS threads")
    rng = np.random.default_rng(0)
    shape = DecoderShape(D_MODEL, HEADS, HEADS, 1)
    model = init_decoder(shape, rng)
    x = rng.standard_normal((n + 1, D_MODEL), dtype=np.float32) * np.float32(0.1)
    cols = (x[:n] @ model.layers[0].w_qkv)[:, D_MODEL:].T  # sequence 0's K and V columns, (2 d_model, n)
    others = rng.standard_normal((BATCH - 1, *cols.shape), dtype=np.float32) * cols.std()
    cols = np.concatenate([cols[None], others])  # (batch, 2 d_model, n)

    prealloc, batch = PreallocCache(shape, 1, n + 1), PreallocCache(shape, BATCH, n + 1)
    prealloc.append(0, cols[:1])
    batch.append(0, cols)
    served, scattered = served_pool(n, bs, np.random.default_rng(1)), scattered_pool(n, bs)
    for pool in (served, scattered):
        for seq in range(BATCH if pool is served else 1):
            kv = cols[seq].reshape(2, HEADS, dh, n).swapaxes(-1, -2)  # (2, heads, n, d_head)
            pool.write(seq, 0, 0, kv[0], kv[1])

    q = rng.standard_normal((BATCH, HEADS, dh), dtype=np.float32) * np.float32(dh**-0.5)  # scaled as a model's
    view = batch.kv[0, :, :, :, :, :n]  # (batch, 2, heads, d_head, n)

    def contiguous(b: int) -> Callable[[], np.ndarray]:
        return lambda: attend(q[:b, :, None] @ view[:b, 0], view[:b, 1])[:, :, 0]

    def paged(pool: PagedKVCache, b: int) -> Callable[[], np.ndarray]:
        return lambda: paged_decode_attention(pool, list(range(b)), q[:b], scale=1.0)

    step_x = x[n:n + 1]

    def prealloc_step() -> np.ndarray:
        prealloc.truncate(n)
        return decode_step(model, step_x, prealloc)

    def paged_step() -> np.ndarray:
        return paged_decode_step(model, step_x, served, [0])

    def judge(name: str, a: Callable[[], np.ndarray], b: Callable[[], np.ndarray], target: float | None,
              what: str) -> None:
        ref, got = a(), b()
        err = float(np.abs(ref - got).max() / np.abs(ref).max())
        t = measure_pair(a, b, args.rounds)
        table.add(Figure(name, t["ratio"], "x", target and ("<=", target), holds=err <= 1e-5,
                         note=f"paged {t['b'] * 1e3:.2f} ms, contiguous {t['a'] * 1e3:.2f} ms; {what}; "
                              f"rel. diff {err:.1e}"))

    with threadpool_limits(threads, user_api="blas"):
        judge("decode attention: paged / contiguous", contiguous(1), paged(served, 1), 1.5, runs(served, [0]))
        judge(f"decode attention, batch of {BATCH}: paged / contiguous", contiguous(BATCH), paged(served, BATCH),
              1.5, runs(served, list(range(BATCH))))
        judge("scattered (every 8th block): paged / contiguous", contiguous(1), paged(scattered, 1), None,
              runs(scattered, [0]) + "; reported, not judged")
        served.extend(0, 1)  # the step's token: it rewrites the same slot on every call, as prealloc's does
        judge("whole decode step: paged / prealloc", prealloc_step, paged_step, 1.1, "one layer with its projections")
    return table.finish()


def served_pool(n: int, bs: int, rng: np.random.Generator) -> PagedKVCache:
    """Sequences 0 … BATCH − 1 grown to ``n`` tokens together, a block each per step, while short requests (1–5
    blocks, at most four alive) start every fourth step and a random one of them ends."""
    pool = PagedKVCache(BATCH * (n // bs) * 5 // 4 + 64, bs, HEADS, D_HEAD)
    for seq in range(BATCH):
        pool.add(seq)
    short: list[int] = []
    for step, start in enumerate(range(0, n, bs)):
        for seq in range(BATCH):
            pool.extend(seq, min(bs, n - start))
        if step % 4 == 0:
            pool.add(BATCH + step)
            pool.extend(BATCH + step, int(rng.integers(1, 6)) * bs)
            short.append(BATCH + step)
            if len(short) > 4:
                pool.free(short.pop(int(rng.integers(len(short)))))
    return pool


def scattered_pool(n: int, bs: int) -> PagedKVCache:
    """Sequence 0 of ``n`` tokens on every 8th block of a full pool: one-block idle sequences hold the rest."""
    blocks = -(-n // bs) * 8
    pool = PagedKVCache(blocks, bs, HEADS, D_HEAD)
    for seq in range(1, blocks + 1):
        pool.add(seq)
        pool.extend(seq, bs)
    for seq in range(1, blocks + 1):
        if pool.tables[seq][0] % 8 == 7:
            pool.free(seq)
    pool.add(0)
    pool.extend(0, n)
    return pool


def runs(pool: PagedKVCache, seqs: list[int]) -> str:
    """How the sequences' blocks lie: runs of consecutive pool blocks, and products (windows) attention reads."""
    tables = [np.asarray(pool.tables[s][:pool.blocks_for(pool.lengths[s])]) for s in seqs]
    sorted_blocks = [np.sort(t) for t in tables]
    n_runs = sum(1 + int((np.diff(b) != 1).sum()) for b in sorted_blocks)
    return f"{sum(map(len, tables))} blocks, runs: {n_runs}, products: {len(windows(tables, pool.block_size))}"


def measure_pair(a: Callable[[], object], b: Callable[[], object], rounds: int) -> dict:
    """``b`` against ``a``, interleaved: per-round ratios b / a and both medians."""
    t = measure_interleaved({"a": a, "b": b}, repeats=rounds)
    return {"ratio": paired_ratios(t["b"], t["a"]), "a": t["a"].median, "b": t["b"].median}


if __name__ == "__main__":
    sys.exit(main())
