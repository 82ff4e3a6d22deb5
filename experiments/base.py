"""What every experiment shares: the bench schema, config errors, variant outcomes.

An experiment is one :class:`Experiment`: its name, the config key its knobs live
under, a dataclass schema, the metric columns it writes, and one function
``run(cfg, bench, seed) -> list[VariantResult]`` (GUIDE §1).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from infer_core.memory import available_bytes
from infer_core.timing import TimeBudgetExceeded, Timing, measure

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A value the user chose is invalid; the message names the full key and the value."""


def require(ok: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``ok``."""
    if not ok:
        raise ConfigError(message)


def require_positive(prefix: str, obj: object, *names: str, minimum: int = 1) -> None:
    """Check that each named integer field of ``obj`` is at least ``minimum``."""
    for name in names:
        value = getattr(obj, name)
        require(value >= minimum, f"{prefix}.{name}={value} must be >= {minimum}")


class DType(Enum):
    """Floating-point dtype of an experiment's arrays."""

    float32 = "float32"
    float64 = "float64"


@dataclass
class BenchConfig:
    """Shared measurement knobs (GUIDE §4), under ``bench.*``."""

    warmup: int = 1  # untimed calls before sampling (the first BLAS call spins up threads)
    repeats: int = 5  # timed samples per variant
    min_sample_s: float = 0.005  # calls are repeated inside a sample until it lasts this long
    max_seconds: float = 120.0  # budget per variant; past it the variant is written as skipped
    threads: int | None = None  # BLAS threads (threadpoolctl); null leaves the library's default
    machine_file: str = "outputs/machine.json"  # cached machine reference (peaks, bandwidth)

    def __post_init__(self) -> None:
        require(self.warmup >= 1, f"bench.warmup={self.warmup} must be >= 1")
        require(self.repeats >= 5, f"bench.repeats={self.repeats} must be >= 5 (GUIDE §4)")
        require(self.min_sample_s > 0, f"bench.min_sample_s={self.min_sample_s} must be > 0")
        require(self.max_seconds > 0, f"bench.max_seconds={self.max_seconds} must be > 0")
        require(
            self.threads is None or self.threads >= 1,
            f"bench.threads={self.threads} must be >= 1 or null",
        )

    def measure(self, fn: Callable[[], object], started: float) -> Timing:
        """Time ``fn`` with these settings, within what is left of the budget of a variant
        that started at ``started`` (a ``time.perf_counter()`` value)."""
        return measure(fn, warmup=self.warmup, repeats=self.repeats, min_sample_s=self.min_sample_s,
                       max_seconds=self.max_seconds - (time.perf_counter() - started))


def check_fits(key: str, parts: dict[str, int], advice: str) -> None:
    """Raise :class:`ConfigError` before allocating when ``parts`` (bytes by name) would not fit."""
    need, avail = sum(parts.values()), available_bytes()
    if need > 0.9 * avail:
        detail = ", ".join(f"{k} {v / 2**30:.2f}" for k, v in parts.items())
        raise ConfigError(f"{key} point needs about {need / 2**30:.2f} GiB ({detail}) but only "
                          f"{avail / 2**30:.2f} GiB is available: {advice}")


@dataclass
class SweepConfig:
    """How a sweep runs, under ``sweep.*`` (not part of any result's identity)."""

    name: str = "${now:%Y-%m-%d_%H-%M-%S}"  # the folder under outputs/sweeps/
    resume: bool = True  # skip points whose results.csv is already complete
    skip_invalid: bool = False  # run the valid points and record the invalid ones as failed
    concurrency: int = 1  # jobs running at once; set per job by the sweeper from the launcher


@dataclass
class VariantResult:
    """The outcome of one measured variant.

    ``timings`` holds the raw samples of each timed operation (written to samples.csv);
    ``sidecars`` holds extra tables by file stem, columns by name (written as ``<stem>.csv``).
    """

    variant: str
    metrics: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"  # ok | failed | skipped
    error: str = ""
    timings: dict[str, Timing] = field(default_factory=dict)
    sidecars: dict[str, dict[str, Any]] = field(default_factory=dict)


def one_line(exc: BaseException) -> str:
    """An exception as one line: ``Type: message`` (``ConfigError``s as their message alone)."""
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


@dataclass(frozen=True)
class Experiment:
    """One experiment: registered once in :mod:`experiments.registry`."""

    name: str  # the value of ``experiment`` in the config, and of the CSV column
    key: str  # config key of its knobs: ``kv`` for ``kv.*``
    schema: type  # dataclass; ``__post_init__`` holds the cross-field rules
    columns: tuple[str, ...]  # metric then correctness columns, in CSV order
    run: Callable[[Any, BenchConfig, int], list[VariantResult]]
    report: str  # module with ``plots(df, out) -> list[Path]`` and ``sections(df) -> str``
    summary: Callable[[list[VariantResult]], str] = lambda results: ""
