"""The shared measurement knobs (``bench.*``) and how one variant is timed, skipped or failed."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from experiments.framework.passes import carried, carried_rounds
from experiments.framework.spec import Column, ConfigError, VariantResult, knob, require
from infer_core.measure.environment import blas_info, usable_cpus
from infer_core.measure.memory import available_bytes
from infer_core.measure.timing import TimeBudgetExceeded, Timing, measure, measure_rounds

log = logging.getLogger(__name__)
MIN_REPEATS = 5


@dataclass
class BenchConfig:
    """The timing harness: warm-up, calibrated samples, budget, BLAS threads."""

    warmup: int = knob(1, "untimed calls before sampling (the first BLAS call spins up its threads)")
    repeats: int = knob(5, f"timed samples per variant (at least {MIN_REPEATS}: a median and quartiles need them)")
    min_sample_s: float = knob(0.005, "each sample repeats the call until it lasts this long [s]")
    max_seconds: float = knob(120.0, "budget per variant [s]: past it the row is `status=skipped` with the reason")
    threads: int | None = knob(None, "BLAS threads via threadpoolctl (null: the library's default)")
    machine_file: str = knob("outputs/machine.json", "the cached machine reference (peaks, bandwidth)")

    def __post_init__(self) -> None:
        require(self.warmup >= 1, f"bench.warmup={self.warmup} must be >= 1")
        require(self.repeats >= MIN_REPEATS,
                f"bench.repeats={self.repeats} must be >= {MIN_REPEATS}: a median and quartiles need five samples")
        require(self.min_sample_s > 0, f"bench.min_sample_s={self.min_sample_s} must be > 0")
        require(self.max_seconds > 0, f"bench.max_seconds={self.max_seconds} must be > 0")
        cpus = usable_cpus()
        require(self.threads is None or 1 <= self.threads <= cpus,
                f"bench.threads={self.threads} must be between 1 and {cpus}, the CPUs this process may use, or null")

    def measure(self, fn: Callable[[], object], started: float) -> Timing:
        """Time ``fn`` with these settings, within what is left of the budget of a variant
        that started at ``started`` (a ``time.perf_counter()`` value); in a point's later pass, after the samples
        the same call took in the earlier ones."""
        return carried(measure(fn, warmup=self.warmup, repeats=self.repeats, min_sample_s=self.min_sample_s,
                               max_seconds=self.max_seconds - (time.perf_counter() - started)))

    def measure_rounds(self, fns: dict[str, Callable[[], object]]) -> tuple[dict[str, Timing], dict[str, str]]:
        """Time ``fns`` interleaved, round by round (so their ratios can be taken per round); a function that
        would pass ``max_seconds`` is left out, with the reason (naming the knob)."""
        timings, over = measure_rounds(fns, warmup=self.warmup, repeats=self.repeats, min_sample_s=self.min_sample_s,
                                       max_seconds=self.max_seconds)
        budget = f"over bench.max_seconds={self.max_seconds:g}"
        return carried_rounds(timings), {k: f"{budget}: {v}" for k, v in over.items()}


#: The columns of ``Timing.stats()``, for experiments that write a timing's summary into their rows.
TIMING_COLUMNS = (
    Column("time_median_s", "s", "median time per call over the samples"),
    Column("time_iqr_s", "s", "interquartile range of the time per call"),
    Column("time_min_s", "s", "fastest sample, per call"),
    Column("time_q1_s", "s", "first quartile of the time per call"),
    Column("time_q3_s", "s", "third quartile of the time per call"),
    Column("time_max_s", "s", "slowest sample, per call"),
    Column("time_mean_s", "s", "mean time per call"),
    Column("time_std_s", "s", "standard deviation of the time per call (ddof 1)"),
    Column("time_cv", "", "coefficient of variation: std / mean", kind="measurement"),
    Column("cpu_time_median_s", "s", "median process CPU time per call (all threads)"),
    Column("n_samples", "", "timed samples (`bench.repeats`)"),
    Column("inner_loops", "", "calls per sample, calibrated so a sample lasts `bench.min_sample_s`",
           kind="measurement"),
    Column("warmup", "", "untimed warm-up calls"),
    Column("unstable", "", "True when the CV is above 10% or a sample lasted under 1 ms", kind="measurement"),
)


def timing_columns(*names: str) -> tuple[Column, ...]:
    """The timing columns called ``names``, in that order."""
    by_name = {c.name: c for c in TIMING_COLUMNS}
    return tuple(by_name[n] for n in names)


def point_threads() -> int:
    """The point's thread count: the BLAS limit it runs under (``bench.threads``, else this job's share of the
    cores under a parallel launcher, else every core), which its own thread pools use too."""
    return int(blas_info()["blas_threads"]) or usable_cpus()


def check_fits(key: str, parts: dict[str, int], advice: str) -> None:
    """Raise :class:`ConfigError` before allocating when ``parts`` (bytes by name) would not fit."""
    need, avail = sum(parts.values()), available_bytes()
    if need > 0.9 * avail:
        detail = ", ".join(f"{k} {v / 2**30:.2f}" for k, v in parts.items())
        raise ConfigError(f"{key} point needs about {need / 2**30:.2f} GiB ({detail}) but only "
                          f"{avail / 2**30:.2f} GiB is available: {advice}")


def one_line(exc: BaseException) -> str:
    """An exception as one line: ``Type: message`` (a :class:`ConfigError` as its message alone)."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {text}"


def run_variant(variant: str, fn: Callable[[], VariantResult], bench: BenchConfig | None = None) -> VariantResult:
    """Call ``fn``; a time budget overrun becomes ``skipped`` (the reason names
    ``bench.max_seconds``), any other exception ``failed``."""
    try:
        return fn()
    except TimeBudgetExceeded as exc:
        reason = " ".join(str(exc).split())
        if bench is not None:
            reason = f"over bench.max_seconds={bench.max_seconds:g}: {reason}"
        log.warning("%s skipped: %s", variant, reason)
        return VariantResult(variant, status="skipped", error=reason)
    except Exception as exc:
        log.error("%s failed:\n%s", variant, traceback.format_exc())
        return VariantResult(variant, status="failed", error=one_line(exc))
