"""The KV memory study: exact time-averaged use on a hand-computed trace for every policy, the sharing count
against its closed form, and the vLLM paper's claim on a ShareGPT-like trace."""

from __future__ import annotations

import numpy as np
import pytest

from infer_core.serving.kv_memory import Allocation, Arena, sharing, simulate
from infer_core.serving.traces import DATASETS, Lengths, make_trace


@pytest.mark.parametrize(("policy", "block", "reserved", "ahead"), [
    (Allocation.max_length, 1, 3 * 16, 2 + 1),  # 16 slots held at each of the 3 steps
    (Allocation.pow2, 1, 3 * 8, 2 + 1),  # final length 6 -> 8
    (Allocation.oracle, 1, 3 * 6, 2 + 1),
    (Allocation.paged, 4, 4 + 8 + 8, 0),  # lengths 4, 5, 6 in blocks of 4
    (Allocation.paged, 1, 4 + 5 + 6, 0),
])
def test_one_request_uses_memory_as_counted_by_hand(policy, block, reserved, ahead):
    """Prompt 4, output 3: the cache holds 4, 5, 6 tokens over three steps (the last token is never cached)."""
    use = simulate(np.array([4]), np.array([3]), policy, budget=16, max_len=16, block_size=block)
    assert (use.token_slots, use.reserved_slots, use.reservation_slots) == (15, reserved, ahead)
    assert use.utilization == pytest.approx(15 / reserved)
    assert use.max_seqs == 1 and use.preemptions == 0


def test_a_contiguous_arena_places_first_fit_and_merges_holes():
    arena = Arena(10)
    assert arena.place(0, 4) and arena.place(1, 3) and arena.place(2, 3) and not arena.place(3, 1)
    arena.release(0)
    arena.release(2)
    assert not arena.place(4, 5) and arena.free == 7  # 7 free, but in holes of 4 and 3: external fragmentation
    arena.release(1)
    assert arena.holes == [(0, 10)] and arena.place(4, 10)


def test_sharing_holds_the_prompt_once_and_copies_its_partial_block_per_sample():
    """Prompt 20 in blocks of 16 (one full block, one partial), 2 samples, 3 steps: step 0 holds the prompt's 2
    blocks once; then each sample writes its own copy of the partial block: 1 + 2 blocks at steps 1 and 2."""
    shared, unshared = sharing(np.array([20]), np.array([3]), n=2, block_size=16)
    assert (shared, unshared) == (2 + 3 + 3, 3 * 2 * 2)


def test_max_length_reservation_wastes_most_and_paged_blocks_of_16_almost_nothing_on_sharegpt():
    prompt, output = DATASETS["sharegpt"]
    trace = make_trace(0, 300, prompt, output, Lengths.lognormal, 1.0, 2048)
    budget = 16384  # 8 GiB of Llama-2-7B's fp16 KV cache (0.5 MiB per token)
    contiguous = simulate(trace.prompt, trace.output, Allocation.max_length, budget, 2048)
    paged = simulate(trace.prompt, trace.output, Allocation.paged, budget, 2048, block_size=16)
    assert contiguous.utilization <= 0.40 and paged.utilization >= 0.96
    assert paged.max_seqs > 4 * contiguous.max_seqs == 4 * 8  # 8 reservations of 2048 fill the budget
