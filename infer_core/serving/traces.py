"""Request traces: seeded prompt and output lengths, and arrival times, as serving benchmarks draw them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np


class Lengths(Enum):
    """How prompt and output lengths vary across requests (seeded)."""

    fixed = "fixed"  # every request the same
    uniform = "uniform"  # uniform on [len·(1 − spread), len·(1 + spread)] (vLLM's range ratio)
    lognormal = "lognormal"  # lognormal with mean len and shape sigma = spread (a long tail)


#: Mean prompt and output lengths of the vLLM paper's datasets (Kwon et al., SOSP 2023, Fig. 11):
#: ShareGPT conversations (input 161.31, output 337.99 tokens) and Alpaca instructions (19.31, 58.45).
DATASETS: dict[str, tuple[int, int]] = {"sharegpt": (161, 338), "alpaca": (19, 58)}


def draw_lengths(rng: np.random.Generator, mean: int, lengths: Lengths, spread: float, n: int) -> np.ndarray:
    """``n`` lengths >= 1 around ``mean``: fixed, uniform on mean·[1 − spread, 1 + spread], or lognormal
    with that mean and sigma ``spread``."""
    if lengths is Lengths.fixed:
        out = np.full(n, mean)
    elif lengths is Lengths.uniform:
        out = rng.integers(round(mean * (1 - spread)), round(mean * (1 + spread)) + 1, n)
    else:
        out = np.rint(rng.lognormal(math.log(mean) - spread**2 / 2, spread, n))
    return np.maximum(out, 1).astype(np.int64)


def arrivals(rng: np.random.Generator, n: int, rate: float | None, burstiness: float = 1.0) -> np.ndarray:
    """When each request is due, in seconds: all at 0 for ``rate`` null or inf; else gamma gaps of shape
    ``burstiness`` and mean 1/rate (a Poisson process for 1), scaled so the last is due at n / rate, as
    vLLM's benchmark does (``get_request``)."""
    if rate is None or math.isinf(rate):
        return np.zeros(n)
    due = np.cumsum(rng.gamma(burstiness, 1.0 / (rate * burstiness), n))
    return due * (n / rate) / due[-1]


@dataclass(frozen=True)
class Trace:
    """Requests by arrival: prompt and output lengths in tokens (``n`` each) and arrival times in seconds."""

    prompt: np.ndarray
    output: np.ndarray
    arrival: np.ndarray

    def __len__(self) -> int:
        return len(self.prompt)


def make_trace(seed: int, n: int, prompt_mean: int, output_mean: int, lengths: Lengths, spread: float,
               max_len: int, rate: float | None = None, burstiness: float = 1.0) -> Trace:
    """``n`` seeded requests; a prompt is cut to ``max_len − 1`` and an output to what ``max_len`` leaves
    (the model's context holds the whole sequence, as a server caps ``max_tokens``); arrivals as
    :func:`arrivals` draws them."""
    rng = np.random.default_rng(seed)
    prompt = np.minimum(draw_lengths(rng, prompt_mean, lengths, spread, n), max_len - 1)
    output = np.minimum(draw_lengths(rng, output_mean, lengths, spread, n), max_len - prompt)
    return Trace(prompt, output, arrivals(rng, n, rate, burstiness))
