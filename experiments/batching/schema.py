"""Knobs of the batching experiment, under ``batch.*``: each default written once, here."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from experiments.framework.spec import ConfigError, knob, require, require_positive
from experiments.shared.trace import TraceKnobs
from infer_core.decoder.model import DecoderShape
from infer_core.serving.scheduler import Policy, Preempt

KEY = "batch"


class Cost(Enum):
    measured = "measured"  # run every iteration for real, on the wall clock
    model = "model"  # replay the same schedule on a per-iteration cost fitted from measured iterations


@dataclass
class BatchConfig(TraceKnobs):
    """A request trace served by a NumPy engine loop over a paged KV cache, static or continuous batching."""

    key: ClassVar[str] = KEY

    policy: Policy = knob(Policy.continuous, "`static` (a batch runs until its longest request ends) or "
                                             "`continuous` (admit and retire at every iteration)")
    max_batch: int = knob(8, "requests in a batch at most (static: the batch size)")
    max_len: int = knob(1024, "longest sequence: prompts and outputs are cut to fit it")
    d_model: int = knob(1024, "model width")
    n_layers: int = knob(1, "blocks (attention, then a SwiGLU feed-forward)")
    n_heads: int = knob(16, "query heads")
    n_kv_heads: int = knob(4, "KV heads (GQA)")
    d_ffn: int = knob(2816, "feed-forward width (0: none)")
    block_size: int = knob(16, "tokens per KV block")
    num_blocks: int | None = knob(None, "KV blocks in the pool: the budget (null: room for max_batch sequences of "
                                        "max_len, no preemption)")
    preempt: Preempt = knob(Preempt.recompute, "when blocks run out: `recompute` (free, prefill again later) or "
                                               "`swap` (copy to the host pool and back)")
    swap_blocks: int = knob(0, "preempt=swap: blocks the host pool holds (past them a preemption recomputes)")
    chunk: int | None = knob(None, "prompt tokens prefilled per iteration at most (chunked prefill); null: whole")
    cost: Cost = knob(Cost.measured, "`measured`: real decode steps; `model`: the schedule replayed on a cost "
                                     "fitted from measured steps of a calibration trace")
    calibration_requests: int = knob(32, "cost=model: requests of the calibration trace (the same distribution, "
                                         "the next seed), run for real under both policies")
    check_requests: int = knob(4, "measured: requests whose every output is checked against a full causal pass")

    def __post_init__(self) -> None:
        self.check_trace()
        require_positive(KEY, self, "max_batch", "d_model", "n_layers", "n_heads", "n_kv_heads", "block_size",
                         "calibration_requests")
        require_positive(KEY, self, "max_len", minimum=2)
        require_positive(KEY, self, "d_ffn", "swap_blocks", "check_requests", minimum=0)
        require(self.chunk is None or self.chunk >= 1, f"{KEY}.chunk={self.chunk} must be >= 1, or null")
        try:
            self.shape  # noqa: B018 - building it checks the model's fields
        except ValueError as exc:
            raise ConfigError(f"{KEY}: {exc}") from None
        need = math.ceil(self.max_len / self.block_size)
        require(self.num_blocks is None or self.num_blocks >= need,
                f"{KEY}.num_blocks={self.num_blocks} must be >= {need}: one sequence of {KEY}.max_len={self.max_len} "
                f"tokens in blocks of {self.block_size}")

    def inactive(self) -> frozenset[str]:
        skip = self.trace_inactive()
        if self.preempt is Preempt.recompute:
            skip.add("swap_blocks")
        skip.add("check_requests" if self.cost is Cost.model else "calibration_requests")
        return frozenset(skip)

    @property
    def shape(self) -> DecoderShape:
        return DecoderShape(self.d_model, self.n_heads, self.n_kv_heads, self.n_layers, d_ffn=self.d_ffn)

    @property
    def pool_blocks(self) -> int:
        return self.num_blocks or self.max_batch * math.ceil(self.max_len / self.block_size)

