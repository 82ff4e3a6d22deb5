"""Serving a request trace over a paged KV cache: static or continuous (iteration-level) batching, a block
budget, and preemption by recompute or by swapping, with no request lost.

One iteration of :func:`serve` admits waiting requests (continuous: whenever a slot and the blocks for
their prompt are free, as Orca and vLLM do; static: a batch of up to ``max_batch`` only when the previous
batch has wholly finished), runs their prefill (whole, or at most ``chunk`` prompt tokens per iteration),
then one batched decode step for every running request past its prefill. A prefill emits its request's
first token; each decode step one more. When a decode step needs a block and none is free, the request
admitted last is preempted: its blocks are freed and it goes back to the front of the queue, either to be
prefilled again over its prompt and the tokens it has produced (recompute) or, while the host pool has
room, with its K and V copied out and later back in (swap).

What an iteration costs comes from an :class:`Executor`: :class:`NumpyExecutor` runs the model for real
over a :class:`~infer_core.serving.paged.PagedKVCache` and reads the clock; :class:`CostModel` predicts the time
of the same iteration from its shape, with a fitted linear model, on a virtual clock.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Protocol

import numpy as np

from infer_core.serving.paged import BlockTables, OutOfBlocks


class Policy(Enum):
    static = "static"  # a batch runs until its longest request ends (finished ones as padding); no one joins
    continuous = "continuous"  # iteration-level: admit and retire at every step


class Preempt(Enum):
    recompute = "recompute"  # free the blocks; prefill prompt + produced tokens again later
    swap = "swap"  # copy the blocks to a host pool; copy them back later


@dataclass(eq=False)
class Request:
    """One request of the trace and what happened to it (times in seconds from the start)."""

    id: int
    arrival: float
    prompt: int
    output: int
    generated: int = 0
    target: int = 0  # tokens the current prefill covers: the prompt and every token produced so far
    prefilled: int = 0  # of them, done
    first_token: float | None = None
    finish: float | None = None
    token_times: list[float] = field(default_factory=list)  # when each token came out
    preemptions: int = 0
    swapped: object | None = None  # the executor's host copy of its K and V, while swapped out
    swapped_len: int = 0  # tokens in that copy


@dataclass(frozen=True)
class Features:
    """What the cost model is fitted on, one field per feature in the fitted vector's order: 1, decoded sequences,
    1 if exactly one (its projections are matrix-vector products, whose cost differs from the matrix-matrix ones of
    a batch), their context tokens, prefill tokens, prefill (query, key) pairs, prefill pieces."""

    intercept: float
    decode_seqs: float
    decode_single: float
    decode_context: float
    prefill_tokens: float
    prefill_pairs: float
    prefill_pieces: float

    def vector(self) -> np.ndarray:
        return np.array([getattr(self, f.name) for f in fields(self)], dtype=np.float64)


#: The feature names, in the fitted vector's order.
FEATURES = tuple(f.name for f in fields(Features))


@dataclass
class Iteration:
    """The shape of one iteration: prefill pieces (request, first position, tokens) and the decoded requests
    with the tokens each attends to."""

    prefill: list[tuple[Request, int, int]] = field(default_factory=list)
    decode: list[Request] = field(default_factory=list)
    contexts: list[int] = field(default_factory=list)

    def features(self) -> np.ndarray:
        """This iteration's :class:`Features`, as the cost model's vector."""
        return Features(intercept=1.0, decode_seqs=len(self.decode), decode_single=float(len(self.decode) == 1),
                        decode_context=sum(self.contexts), prefill_tokens=sum(t for _, _, t in self.prefill),
                        prefill_pairs=sum(t * (s + t) for _, s, t in self.prefill),
                        prefill_pieces=len(self.prefill)).vector()


class Executor(Protocol):
    """Runs (or models) iterations; ``clock`` is the time now in seconds since the start."""

    def clock(self) -> float: ...

    def wait_until(self, when: float) -> None: ...

    def run(self, it: Iteration) -> None: ...

    def start(self, req: Request) -> None:
        """``req`` enters the pool to be prefilled (first time, or again after a recompute preemption)."""
        ...

    def swap_out(self, req: Request) -> object:
        """A host copy of the request's cached K and V (its blocks are then freed by the scheduler)."""
        ...

    def swap_in(self, req: Request) -> None:
        """Write ``req.swapped`` back into the blocks the scheduler took for it."""
        ...

    def finish(self, req: Request) -> None:
        """``req`` left the pool: finished, or freed to be recomputed."""
        ...


@dataclass
class Outcome:
    """Every request served, and counts over the run."""

    requests: list[Request]
    iterations: int = 0
    preemptions: int = 0
    swaps: int = 0
    peak_blocks: int = 0
    host_blocks: int = 0  # blocks swapped out now
    batch_sizes: list[int] = field(default_factory=list)
    steps: list[tuple[np.ndarray, float]] = field(default_factory=list)  # (features, seconds) per iteration


def run_trace(arrival: np.ndarray, prompt: np.ndarray, output: np.ndarray, tables: BlockTables, ex: Executor,
          policy: Policy, max_batch: int, preempt: Preempt = Preempt.recompute, chunk: int | None = None,
          swap_blocks: int = 0) -> Outcome:
    """Serve the trace (arrival times, prompt and output lengths) to the end; every request finishes once.

    Static batching runs a batch as a fixed-shape batch does: a request that has finished stays in it as
    padding (its row is still computed, its cache still grows) until the batch's longest request ends."""
    reqs = [Request(i, float(a), int(p), int(o)) for i, (a, p, o) in enumerate(zip(arrival, prompt, output,
                                                                                    strict=True))]
    for r in reqs:
        if tables.blocks_for(r.prompt + r.output) > tables.num_blocks:
            raise ValueError(f"request {r.id} needs {tables.blocks_for(r.prompt + r.output)} blocks of "
                             f"{tables.block_size} tokens; the pool has {tables.num_blocks}")
    pending, waiting, running = deque(sorted(reqs, key=lambda r: r.arrival)), deque(), []
    out = Outcome(reqs)
    while pending or waiting or running:
        now = began = ex.clock()
        while pending and pending[0].arrival <= now:
            waiting.append(pending.popleft())
        if policy is Policy.continuous or not running:
            while waiting and len(running) < max_batch and _admit(waiting[0], tables, ex, out):
                running.append(waiting.popleft())
        if not running:
            if waiting:
                raise RuntimeError(f"request {waiting[0].id} cannot be admitted into an empty pool")
            ex.wait_until(pending[0].arrival)
            continue
        it = Iteration()
        _prefill(it, running, chunk)
        _decode(it, running, waiting, tables, ex, preempt, swap_blocks, out)
        out.peak_blocks = max(out.peak_blocks, tables.num_blocks - tables.num_free)
        ex.run(it)
        now = ex.clock()
        out.iterations += 1
        out.batch_sizes.append(len(it.decode))
        for r in [p for p, s, t in it.prefill if s + t == p.target] + it.decode:
            if r.finish is not None:
                continue  # padding
            r.generated += 1
            r.token_times.append(now)
            r.first_token = now if r.first_token is None else r.first_token
            if r.generated == r.output:
                r.finish = now
                if policy is Policy.continuous:
                    _retire(r, running, tables, ex)
        if policy is Policy.static and all(r.finish is not None for r in running):
            for r in list(running):
                _retire(r, running, tables, ex)
        out.steps.append((it.features(), ex.clock() - began))  # the whole iteration: scheduling included
    return out


def _retire(r: Request, running: list[Request], tables: BlockTables, ex: Executor) -> None:
    running.remove(r)
    tables.free(r.id)
    ex.finish(r)


def _prefill(it: Iteration, running: list[Request], chunk: int | None) -> None:
    """The prefill pieces of this iteration: every pending prefill whole, or ``chunk`` tokens in all."""
    budget = chunk or np.inf
    for r in running:
        if r.prefilled < r.target and budget > 0:
            t = int(min(r.target - r.prefilled, budget))
            it.prefill.append((r, r.prefilled, t))
            r.prefilled += t
            budget -= t


def _decode(it: Iteration, running: list[Request], waiting: deque[Request], tables: BlockTables, ex: Executor,
            preempt: Preempt, swap_blocks: int, out: Outcome) -> None:
    """Room for one more token of every running request past its prefill; when no block is free, preempt the
    request admitted last (a finished padding row first) until there is, or until the request itself goes."""
    prefilling = {r.id for r, _, _ in it.prefill}
    for r in [r for r in running if r.prefilled >= r.target and r.id not in prefilling]:
        while r in running:
            try:
                tables.extend(r.id, 1)
            except OutOfBlocks:
                victim = next((v for v in reversed(running) if v.finish is not None), running[-1])
                if victim in it.decode:
                    del it.contexts[it.decode.index(victim)]
                    it.decode.remove(victim)
                    tables.truncate(victim.id, tables.lengths[victim.id] - 1)  # its token of this step
                if victim.finish is not None:
                    _retire(victim, running, tables, ex)
                    continue
                running.remove(victim)
                _preempt(victim, tables, ex, preempt, swap_blocks, out, victim.id not in prefilling)
                waiting.appendleft(victim)
                continue
            it.decode.append(r)
            it.contexts.append(tables.lengths[r.id])
            break
    it.prefill = [p for p in it.prefill if p[0] in running]


def _admit(r: Request, tables: BlockTables, ex: Executor, out: Outcome) -> bool:
    """Take blocks for ``r`` (its swapped K and V, or its prefill and the next token) if they are free."""
    need = r.swapped_len if r.swapped is not None else r.prompt + r.generated
    if tables.blocks_for(need + 1) > tables.num_free:
        return False
    tables.add(r.id)
    tables.extend(r.id, need)
    if r.swapped is not None:
        out.host_blocks -= tables.blocks_for(need)
        ex.swap_in(r)
        r.swapped = None
    else:
        r.target, r.prefilled = need, 0
        ex.start(r)
    return True


def _preempt(r: Request, tables: BlockTables, ex: Executor, how: Preempt, swap_blocks: int, out: Outcome,
             swappable: bool) -> None:
    """Take ``r`` out of the pool: to the host pool if swapping, there is room and its cache is written (not
    mid-prefill), else to be recomputed."""
    r.preemptions += 1
    out.preemptions += 1
    blocks = tables.blocks_for(tables.lengths[r.id])
    if how is Preempt.swap and swappable and out.host_blocks + blocks <= swap_blocks:
        r.swapped, r.swapped_len = ex.swap_out(r), tables.lengths[r.id]
        tables.free(r.id)
        out.host_blocks += blocks
        out.swaps += 1
        return
    tables.free(r.id)
    ex.finish(r)
    r.target = r.prefilled = 0


class WallClock:
    """Real time since construction; waiting sleeps."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def clock(self) -> float:
        return time.perf_counter() - self.t0

    def wait_until(self, when: float) -> None:
        time.sleep(max(0.0, when - self.clock()))
