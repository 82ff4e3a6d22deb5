"""Knobs of the KV memory study, under ``mem.*``: each default written once, here."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from experiments.framework.spec import knob, require, require_positive
from experiments.shared.trace import LengthKnobs, trace_knob
from infer_core.model import PRESETS, shape_of
from infer_core.serving.kv_memory import Allocation
from infer_core.serving.traces import DATASETS

KEY = "mem"


class Dataset(Enum):
    sharegpt = "sharegpt"  # vLLM paper's ShareGPT means: prompt 161, output 338 tokens
    alpaca = "alpaca"  # vLLM paper's Alpaca means: prompt 19, output 58 tokens
    custom = "custom"  # mem.prompt_len and mem.output_len


@dataclass
class MemConfig(LengthKnobs):
    """One request trace, served under every allocation policy; memory use time-averaged over it (all requests
    arrive at once)."""

    key: ClassVar[str] = KEY
    n_requests: int = trace_knob("n_requests", 1000)

    dataset: Dataset = knob(Dataset.sharegpt, "`sharegpt` or `alpaca` (the vLLM paper's mean lengths), or `custom`")
    prompt_len: int | None = knob(None, "mean prompt tokens (null: the dataset's)")
    output_len: int | None = knob(None, "mean output tokens (null: the dataset's)")
    max_len: int = knob(2048, "the model's maximum sequence length: what `max_length` reserves; longer requests "
                              "are cut to it")
    model: str = knob("llama-2-7b", f"shape preset giving the KV bytes per token: {', '.join(PRESETS)}")
    kv_bytes: int = knob(2, "bytes per cached element (2: fp16)")
    budget_gib: float = knob(8.0, "KV cache memory [GiB]: with the model, the token slots every policy shares")
    policies: list[Allocation] = knob(list(Allocation), "any of `[max_length, pow2, oracle, paged]`")
    block_sizes: list[int] = knob([16], "paged: tokens per block, one row each")
    samples: list[int] = knob([], "parallel samples per request: for each n, a row with the memory the paged cache "
                                  "saves by sharing the prompt's blocks between the n samples")
    sharing_block_size: int = knob(16, "block size of the sharing rows")
    sharing_requests: int = knob(200, "requests of the trace the sharing rows follow (the first ones)")

    def __post_init__(self) -> None:
        self.check_lengths()
        require_positive(KEY, self, "max_len", "kv_bytes", "sharing_block_size", "sharing_requests")
        require_positive(KEY, self, "max_len", minimum=2)
        if self.dataset is Dataset.custom:
            require(self.prompt_len is not None and self.output_len is not None,
                    f"{KEY}.dataset=custom needs {KEY}.prompt_len and {KEY}.output_len")
        require(all(n is None or n >= 1 for n in (self.prompt_len, self.output_len)),
                f"{KEY}.prompt_len={self.prompt_len} and {KEY}.output_len={self.output_len} must be >= 1, or null")
        require(self.model in PRESETS, f"{KEY}.model={self.model!r} is not a known shape: choose one of "
                                       f"{', '.join(PRESETS)}")
        require(self.budget_gib > 0, f"{KEY}.budget_gib={self.budget_gib} must be > 0")
        require(bool(self.policies), f"{KEY}.policies is empty: name at least one of "
                                     f"{', '.join(a.value for a in Allocation)}")
        require(all(b >= 1 for b in self.block_sizes) and (Allocation.paged not in self.policies
                                                           or bool(self.block_sizes)),
                f"{KEY}.block_sizes={self.block_sizes}: paged needs at least one block size, each >= 1")
        require(all(n >= 2 for n in self.samples), f"{KEY}.samples={self.samples}: each n must be >= 2")
        require(self.budget_tokens >= self.max_len,
                f"{KEY}.budget_gib={self.budget_gib} holds {self.budget_tokens} tokens of {self.model}, fewer than "
                f"{KEY}.max_len={self.max_len}: one request could not fit")

    def inactive(self) -> frozenset[str]:
        skip = self.lengths_inactive() | (set() if self.samples else {"sharing_block_size", "sharing_requests"})
        return frozenset(skip | (set() if Allocation.paged in self.policies else {"block_sizes"}))

    @property
    def means(self) -> tuple[int, int]:
        """Mean prompt and output tokens: the knobs', else the dataset's (read when the trace is drawn)."""
        prompt, output = DATASETS.get(self.dataset.value, (None, None))
        return int(self.prompt_len or prompt), int(self.output_len or output)

    @property
    def bytes_per_token(self) -> int:
        """K and V of every layer and KV head for one token."""
        s = shape_of(self.model)
        return 2 * s.n_layers * s.n_kv_heads * s.d_head * self.kv_bytes

    @property
    def budget_tokens(self) -> int:
        return int(self.budget_gib * 2**30) // self.bytes_per_token
