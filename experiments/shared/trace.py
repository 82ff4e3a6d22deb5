"""The request trace of an experiment that serves requests (serve, batching; kv_memory's lengths): its knobs,
each meaning written once, one validation, and one draw (:mod:`infer_core.serving.traces`). An experiment states
only the defaults that suit it (:func:`trace_knob`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from experiments.framework.spec import Knobs, knob, require, require_positive
from infer_core.serving.traces import Lengths, arrivals, draw_lengths

MEANINGS = {
    "n_requests": "requests in the trace (serve: per load level)",
    "prompt_len": "mean prompt tokens",
    "output_len": "mean output tokens (serve: asked as max_tokens, the end of text ignored)",
    "lengths": "`fixed`, `uniform` or `lognormal` lengths around the means",
    "spread": "lognormal sigma, or the uniform half-width as a share of the mean",
    "rate": "arrivals per second (`inf`: all at once); null: all at once (batching) or a closed loop (serve)",
    "burstiness": "gamma shape of the arrival gaps: 1 Poisson, < 1 burstier, > 1 more regular",
}


def trace_knob(name: str, default: Any) -> Any:
    """A trace knob with an experiment's own default and the one meaning."""
    return knob(default, MEANINGS[name])


@dataclass
class LengthKnobs(Knobs):
    """How many requests and how long: the lengths of a trace."""

    key: ClassVar[str] = ""
    n_requests: int = trace_knob("n_requests", 128)
    lengths: Lengths = trace_knob("lengths", Lengths.lognormal)
    spread: float = trace_knob("spread", 1.0)

    def check_lengths(self) -> None:
        require_positive(self.key, self, "n_requests")
        require(self.spread >= 0 and (self.lengths is not Lengths.uniform or self.spread < 1),
                f"{self.key}.spread={self.spread} must be >= 0 (and < 1 for uniform lengths)")
        require(self.lengths is not Lengths.lognormal or self.spread > 0,
                f"{self.key}.spread={self.spread} must be > 0 for lognormal lengths (it is the sigma)")

    def lengths_inactive(self) -> set[str]:
        return {"spread"} if self.lengths is Lengths.fixed else set()

    def draw_lengths(self, rng: np.random.Generator, mean: int, n: int) -> np.ndarray:
        return draw_lengths(rng, mean, self.lengths, self.spread, n)


@dataclass
class TraceKnobs(LengthKnobs):
    """A trace of requests with arrival times: lengths around two means, and a rate."""

    prompt_len: int = trace_knob("prompt_len", 16)
    output_len: int = trace_knob("output_len", 48)
    rate: float | None = trace_knob("rate", None)
    burstiness: float = trace_knob("burstiness", 1.0)

    def check_trace(self) -> None:
        """The one validation of a trace's knobs."""
        self.check_lengths()
        require_positive(self.key, self, "prompt_len", "output_len")
        require(self.rate is None or self.rate > 0, f"{self.key}.rate={self.rate} must be > 0 (inf: all at once), "
                                                    "or null")
        require(self.burstiness > 0, f"{self.key}.burstiness={self.burstiness} must be > 0")

    def trace_inactive(self) -> set[str]:
        return self.lengths_inactive() | ({"burstiness"} if self.rate is None or math.isinf(self.rate) else set())

    def draw_arrivals(self, rng: np.random.Generator, n: int, rate: float | None) -> np.ndarray:
        """When each of ``n`` requests is due at ``rate`` (null or inf: all at once), gaps of shape ``burstiness``."""
        return arrivals(rng, n, rate, self.burstiness)
