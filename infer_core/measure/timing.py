"""The timing harness: warm-up, calibration, repeated samples, robust statistics.

``measure(fn)`` warms ``fn`` up, repeats it inside each sample until a sample lasts at
least ``min_sample_s``, takes ``repeats`` samples with ``perf_counter_ns`` (and the
process CPU time), and returns per-call statistics. A run that would pass
``max_seconds`` raises :class:`TimeBudgetExceeded` instead of hanging.

``measure_interleaved(fns)`` times several functions in rounds, one sample of each per round,
so that a ratio of two of them can be taken round by round (:func:`paired_ratios`): on a
shared machine whose speed drifts over seconds, the drift then cancels in each ratio.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import numpy as np

#: pyperf's threshold for an unstable benchmark.
UNSTABLE_CV = 0.10
#: A raw sample shorter than this is dominated by clock resolution and call overhead.
UNSTABLE_MIN_SAMPLE_S = 1e-3


class TimeBudgetExceeded(RuntimeError):
    """Raised when a measurement would pass its time budget; the message says why."""


@dataclass(frozen=True)
class Timing:
    """Raw samples of one measurement; every statistic is per call, in seconds. Samples of several passes over the
    same call merge (:meth:`merged`): each sample carries its own inner loop count."""

    sample_ns: tuple[int, ...]  # wall time of each sample (``inner_loops[i]`` calls)
    cpu_sample_ns: tuple[int, ...]  # process CPU time of each sample
    inner_loops: tuple[int, ...]  # calls in each sample (an int: the same for every sample)
    warmup: int

    def __post_init__(self) -> None:
        loops = self.inner_loops
        loops = (int(loops),) * len(self.sample_ns) if isinstance(loops, (int, np.integer)) else tuple(loops)
        if not len(self.sample_ns) == len(self.cpu_sample_ns) == len(loops):
            raise ValueError(f"a timing needs as many CPU times and loop counts as samples: {len(self.sample_ns)}, "
                             f"{len(self.cpu_sample_ns)}, {len(loops)}")
        object.__setattr__(self, "inner_loops", loops)

    def merged(self, *later: Timing) -> Timing:
        """This timing's samples followed by those of ``later`` ones (the same call measured again, perhaps with
        another inner loop count); the warm-up is this one's."""
        return Timing(sum((t.sample_ns for t in later), self.sample_ns),
                      sum((t.cpu_sample_ns for t in later), self.cpu_sample_ns),
                      sum((t.inner_loops for t in later), self.inner_loops), self.warmup)

    @cached_property
    def per_call_s(self) -> np.ndarray:
        return np.asarray(self.sample_ns, dtype=np.float64) / np.asarray(self.inner_loops) / 1e9

    @cached_property
    def cpu_per_call_s(self) -> np.ndarray:
        return np.asarray(self.cpu_sample_ns, dtype=np.float64) / np.asarray(self.inner_loops) / 1e9

    @property
    def n(self) -> int:
        return len(self.sample_ns)

    @cached_property
    def quartiles(self) -> tuple[float, float, float]:
        q1, med, q3 = np.percentile(self.per_call_s, [25, 50, 75])
        return float(q1), float(med), float(q3)

    @property
    def median(self) -> float:
        return self.quartiles[1]

    @property
    def iqr(self) -> float:
        return self.quartiles[2] - self.quartiles[0]

    @property
    def mean(self) -> float:
        return float(self.per_call_s.mean())

    @property
    def std(self) -> float:
        return float(self.per_call_s.std(ddof=1)) if self.n > 1 else 0.0

    @property
    def cv(self) -> float:
        return self.std / self.mean if self.mean > 0 else math.inf

    @property
    def unstable(self) -> bool:
        """CV above 10%, or a raw sample shorter than 1 ms."""
        return self.cv > UNSTABLE_CV or min(self.sample_ns) < UNSTABLE_MIN_SAMPLE_S * 1e9

    def stats(self) -> dict[str, float | int | bool]:
        """The per-point summary of a measurement, keyed by CSV column name."""
        q1, med, q3 = self.quartiles
        return {
            "time_median_s": med,
            "time_iqr_s": q3 - q1,
            "time_min_s": float(self.per_call_s.min()),
            "time_q1_s": q1,
            "time_q3_s": q3,
            "time_max_s": float(self.per_call_s.max()),
            "time_mean_s": self.mean,
            "time_std_s": self.std,
            "time_cv": self.cv,
            "cpu_time_median_s": float(np.median(self.cpu_per_call_s)),
            "n_samples": self.n,
            "inner_loops": min(self.inner_loops),
            "warmup": self.warmup,
            "unstable": self.unstable,
        }


def _calibrate(
    fn: Callable[[], object], warmup: int, min_sample_s: float, max_seconds: float = math.inf
) -> tuple[int, float, float]:
    """Run ``fn`` ``warmup`` times; return the inner loop count that makes a sample last
    ``min_sample_s``, the fastest call and the time spent (both ns). Raises
    :class:`TimeBudgetExceeded` if the warm-up alone passes ``max_seconds`` before it ends."""
    start = time.perf_counter_ns()
    fastest = elapsed = math.inf
    for i in range(warmup):
        t0 = time.perf_counter_ns()
        fn()
        fastest = min(fastest, time.perf_counter_ns() - t0)
        elapsed = time.perf_counter_ns() - start
        if elapsed > max_seconds * 1e9 and i + 1 < warmup:
            raise TimeBudgetExceeded(
                f"warm-up call {i + 1} of {warmup} already took {elapsed / 1e9:.3g} s of {max_seconds:.3g} s"
            )
    return max(1, math.ceil(min_sample_s * 1e9 / max(fastest, 1))), fastest, elapsed


@contextmanager
def _gc_off() -> Iterator[None]:
    """The garbage collector off inside the block (a collection would land in one sample)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _sample(fn: Callable[[], object], inner: int) -> tuple[int, int]:
    """Wall and process CPU nanoseconds of ``inner`` calls of ``fn``."""
    c0, t0 = time.process_time_ns(), time.perf_counter_ns()
    for _ in range(inner):
        fn()
    t1, c1 = time.perf_counter_ns(), time.process_time_ns()
    return t1 - t0, c1 - c0


def measure(
    fn: Callable[[], object],
    *,
    warmup: int = 1,
    repeats: int = 5,
    min_sample_s: float = 0.005,
    max_seconds: float = math.inf,
) -> Timing:
    """Time ``fn()``: ``warmup`` calls, then ``repeats`` samples of calibrated length.

    The inner loop count is ``ceil(min_sample_s / t)`` with ``t`` the fastest warm-up
    call. Before sampling, the remaining time is predicted from ``t``; if warm-up plus
    sampling would pass ``max_seconds``, :class:`TimeBudgetExceeded` is raised with the
    estimate. The garbage collector is off while samples are taken.
    """
    if warmup < 1 or repeats < 1:
        raise ValueError(f"warmup={warmup} and repeats={repeats} must both be >= 1")
    inner, fastest, elapsed = _calibrate(fn, warmup, min_sample_s, max_seconds)
    predicted = elapsed + repeats * inner * fastest
    if predicted > max_seconds * 1e9:
        raise TimeBudgetExceeded(
            f"warm-up plus {repeats} samples of {inner} call(s) at {fastest / 1e9:.3g} s per call "
            f"would take {predicted / 1e9:.3g} s of {max_seconds:.3g} s"
        )
    with _gc_off():
        samples = [_sample(fn, inner) for _ in range(repeats)]
    return _timing(samples, inner, warmup)


def measure_interleaved(
    fns: Mapping[str, Callable[[], object]],
    *,
    warmup: int = 1,
    repeats: int = 5,
    min_sample_s: float = 0.005,
) -> dict[str, Timing]:
    """Time each of ``fns`` like :func:`measure`, but in ``repeats`` rounds of one sample each.

    Each function is warmed up and calibrated on its own; then every round takes one sample of
    each, starting one function later each round, so no function always runs first. Sample
    ``i`` of every returned :class:`Timing` comes from round ``i``. The garbage collector is off
    while samples are taken.
    """
    timings, _ = measure_rounds(fns, warmup=warmup, repeats=repeats, min_sample_s=min_sample_s)
    return timings


def measure_rounds(
    fns: Mapping[str, Callable[[], object]],
    *,
    warmup: int = 1,
    repeats: int = 5,
    min_sample_s: float = 0.005,
    max_seconds: float = math.inf,
) -> tuple[dict[str, Timing], dict[str, str]]:
    """:func:`measure_interleaved` with a time budget per function: a function whose warm-up plus
    ``repeats`` samples would pass ``max_seconds`` is left out of the rounds. Returns the timings of
    the others and, for each function left out, the reason."""
    if warmup < 1 or repeats < 1:
        raise ValueError(f"warmup={warmup} and repeats={repeats} must both be >= 1")
    inner, over = {}, {}
    for name, fn in fns.items():
        try:
            n, fastest, elapsed = _calibrate(fn, warmup, min_sample_s, max_seconds)
        except TimeBudgetExceeded as exc:
            over[name] = str(exc)
            continue
        predicted = elapsed + repeats * n * fastest
        if predicted > max_seconds * 1e9:
            over[name] = (f"warm-up plus {repeats} samples of {n} call(s) at {fastest / 1e9:.3g} s per call would "
                          f"take {predicted / 1e9:.3g} s of {max_seconds:.3g} s")
        else:
            inner[name] = n
    names = list(inner)
    samples: dict[str, list[tuple[int, int]]] = {name: [] for name in names}
    with _gc_off():
        for r in range(repeats if names else 0):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                samples[name].append(_sample(fns[name], inner[name]))
    return {name: _timing(samples[name], inner[name], warmup) for name in names}, over


def _timing(samples: list[tuple[int, int]], inner: int, warmup: int) -> Timing:
    return Timing(tuple(w for w, _ in samples), tuple(c for _, c in samples), inner, warmup)


def ratio_stats(ratios: np.ndarray) -> tuple[float, float, float, bool]:
    """Median, first and third quartile of per-round ratios, and whether they are unstable: an
    interquartile range above 10% of the median (the CV threshold of a single timing)."""
    q1, med, q3 = (float(v) for v in np.percentile(ratios, [25, 50, 75]))
    return med, q1, q3, (q3 - q1) > UNSTABLE_CV * med


def paired_ratios(numerator: Timing, denominator: Timing) -> np.ndarray:
    """Per-round ratios of per-call times, for two timings from one :func:`measure_interleaved`."""
    if numerator.n != denominator.n:
        raise ValueError(f"paired timings need as many samples: {numerator.n} vs {denominator.n}")
    return numerator.per_call_s / denominator.per_call_s
