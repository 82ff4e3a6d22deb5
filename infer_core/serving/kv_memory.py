"""How much of the memory a KV cache reserves holds tokens, under each allocation policy, over a request trace.

Every request arrives at once and is served first come, first served, one token per request per step (the
prompt enters at admission). A contiguous policy reserves one region per request in a first-fit arena of
``budget`` token slots: the model's maximum length (the systems before vLLM), the request's final length
rounded up to a power of two, or exactly its final length (an oracle). ``paged`` takes blocks of
``block_size`` slots as the sequence grows (:class:`~infer_core.serving.paged.BlockTables`), and when none is free
preempts the request admitted last (freed, prefilled again later).

At every step the reserved slots split into token states (slots holding a token), reservation (slots this
request will fill later) and internal fragmentation (slots it never fills); the time averages of these,
over the whole trace, are what vLLM's paper plots (Kwon et al., SOSP 2023, Fig. 2). External fragmentation
is the free memory while the next request waits for a hole large enough.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from infer_core.serving.paged import BlockTables, OutOfBlocks


class Allocation(Enum):
    max_length = "max_length"  # reserve the model's maximum sequence length
    pow2 = "pow2"  # reserve the final length rounded up to a power of two
    oracle = "oracle"  # reserve exactly the final length
    paged = "paged"  # blocks on demand


@dataclass(frozen=True)
class MemoryUse:
    """Time-averaged over the steps of a trace (token slots summed over the steps)."""

    steps: int
    token_slots: int  # Σ over steps of slots holding tokens
    reserved_slots: int  # Σ of slots reserved or allocated
    reservation_slots: int  # Σ of slots reserved for tokens still to come
    external_slots: int  # Σ of free slots while the next request could not be placed
    budget_slots: int  # Σ of the budget (steps × budget)
    max_seqs: int  # the most sequences resident at once
    mean_seqs: float
    preemptions: int

    @property
    def utilization(self) -> float:
        """Slots holding tokens / slots reserved."""
        return self.token_slots / self.reserved_slots

    @property
    def internal_slots(self) -> int:
        return self.reserved_slots - self.token_slots - self.reservation_slots


def reservation(policy: Allocation, final: int, max_len: int) -> int:
    """Slots a contiguous policy reserves for a request of ``final`` tokens in all."""
    if policy is Allocation.max_length:
        return max_len
    if policy is Allocation.pow2:
        return 1 << (final - 1).bit_length()
    return final


class Arena:
    """First-fit placement of contiguous regions in ``size`` slots; freed neighbours merge."""

    def __init__(self, size: int) -> None:
        self.holes: list[tuple[int, int]] = [(0, size)]  # (start, length), by start
        self.regions: dict[int, tuple[int, int]] = {}

    def place(self, key: int, n: int) -> bool:
        for i, (start, length) in enumerate(self.holes):
            if length >= n:
                self.holes[i:i + 1] = [(start + n, length - n)] if length > n else []
                self.regions[key] = (start, n)
                return True
        return False

    def release(self, key: int) -> None:
        start, n = self.regions.pop(key)
        holes = sorted([*self.holes, (start, n)])
        merged = [holes[0]]
        for s, n in holes[1:]:
            if merged[-1][0] + merged[-1][1] == s:
                merged[-1] = (merged[-1][0], merged[-1][1] + n)
            else:
                merged.append((s, n))
        self.holes = merged

    @property
    def free(self) -> int:
        return sum(n for _, n in self.holes)


def simulate(prompt: np.ndarray, output: np.ndarray, policy: Allocation, budget: int, max_len: int,
             block_size: int = 16) -> MemoryUse:
    """Serve the trace (all at once, one token per request per step) under ``policy`` in ``budget`` slots."""
    final = prompt + output - 1  # tokens cached when the last one is produced
    n = len(prompt)
    if (final > max_len).any() or (reservation(policy, int(final.max()), max_len) > budget):
        raise ValueError(f"a request of {int(final.max())} tokens does not fit: max_len={max_len}, budget={budget}")
    waiting, running = list(range(n))[::-1], []  # waiting: popped from the end
    length, done = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)  # cached tokens, tokens produced
    paged = policy is Allocation.paged
    tables, arena = (BlockTables(budget // block_size, block_size), None) if paged else (None, Arena(budget))
    total = dict(steps=0, token_slots=0, reserved_slots=0, reservation_slots=0, external_slots=0, budget_slots=0)
    max_seqs, seqs_sum, preemptions = 0, 0, 0
    while waiting or running:
        admitted = set()
        while waiting:  # admit in order while the next fits
            r = waiting[-1]
            need = int(prompt[r] + done[r])
            if paged:
                if tables.blocks_for(need + 1) > tables.num_free:
                    break
                tables.add(r)
                tables.extend(r, need)
            elif not arena.place(r, reservation(policy, int(final[r]), max_len)):
                break
            waiting.pop()
            running.append(r)
            admitted.add(r)
            length[r], done[r] = need, done[r] + 1  # the prefill produces a token
        if waiting and not running:
            raise RuntimeError(f"request {waiting[-1]} does not fit in an empty budget of {budget} slots")
        blocked = bool(waiting)
        for r in [r for r in running if r not in admitted]:  # one token each; a finished request leaves
            if r not in running:
                continue  # preempted for an earlier one this step
            if done[r] == output[r]:
                running.remove(r)
                tables.free(r) if paged else arena.release(r)
                continue
            if paged:
                while r in running:
                    try:
                        tables.extend(r, 1)
                        break
                    except OutOfBlocks:
                        victim = running.pop()
                        tables.free(victim)
                        if done[victim] < output[victim]:  # else it has produced its last token: it leaves
                            waiting.append(victim)
                            preemptions += 1
                if r not in running:
                    continue
            length[r] += 1
            done[r] += 1
        live = int(length[running].sum()) if running else 0
        if paged:
            reserved = (tables.num_blocks - tables.num_free) * block_size
            ahead, free = 0, tables.num_free * block_size
        else:
            reserved = sum(arena.regions[r][1] for r in running)
            ahead, free = int((final[running] - length[running]).sum()) if running else 0, arena.free
        total["steps"] += 1
        total["token_slots"] += live
        total["reserved_slots"] += reserved
        total["reservation_slots"] += ahead
        total["external_slots"] += free if blocked else 0
        total["budget_slots"] += budget
        max_seqs, seqs_sum = max(max_seqs, len(running)), seqs_sum + len(running)
    return MemoryUse(**total, max_seqs=max_seqs, mean_seqs=seqs_sum / total["steps"], preemptions=preemptions)


def sharing(prompt: np.ndarray, output: np.ndarray, n: int, block_size: int) -> tuple[int, int]:
    """Blocks held, summed over every generation step of every request, by ``n`` samples of each request that
    share its prompt's blocks (fork, copy-on-write: :class:`~infer_core.serving.paged.BlockTables`) and by ``n``
    samples that each hold their own copy: (shared, unshared)."""
    shared = unshared = 0
    for p, o in zip(prompt.tolist(), output.tolist(), strict=True):
        tables = BlockTables(n * (-(-(p + o) // block_size) + 1), block_size)
        tables.add(-1)
        tables.extend(-1, p)
        for s in range(n):
            tables.fork(-1, s)
        tables.free(-1)
        for step in range(o):
            if step:
                for s in range(n):
                    tables.extend(s, 1)
            shared += tables.num_blocks - tables.num_free
            unshared += n * tables.blocks_for(p + step)
    return shared, unshared
