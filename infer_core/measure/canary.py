"""The drift canary: a short, fixed measurement of the machine's speed, taken again and again over a sweep.

A shared machine's speed drifts in stretches of seconds (memory bandwidth above all). A point measured during a
slow stretch is slow whatever the code did. The canary reads two speeds in a few tens of milliseconds: a copy of
64 MiB of float64 (bandwidth, read + write counted) and a 512×512 float32 product (sgemm) on one BLAS thread, so
that readings taken by points of any thread count are the same measurement. Each is the median of a few calls, so
one descheduled call does not make the reading.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache

import numpy as np
from threadpoolctl import threadpool_limits

COPY_BYTES = 64 * 2**20  # one array; a copy moves twice this
SGEMM_N = 512
COPY_CALLS, SGEMM_CALLS = 3, 5


@dataclass(frozen=True)
class CanaryReading:
    """One reading: when it was taken and the two speeds."""

    at_utc: str  # ISO 8601 with milliseconds, when the reading started
    copy_gbps: float  # median of COPY_CALLS copies
    sgemm_gflops: float  # median of SGEMM_CALLS products
    seconds: float  # what the reading cost


@lru_cache(maxsize=1)
def _operands() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The arrays, made once per process (filled, so every page is touched before the first reading)."""
    src = np.full(COPY_BYTES // 8, 1.5)
    dst = np.zeros_like(src)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((SGEMM_N, SGEMM_N)).astype(np.float32)
    b = rng.standard_normal((SGEMM_N, SGEMM_N)).astype(np.float32)
    return src, dst, a, b, np.empty_like(a)


def _median_ns(fn: Callable[[], object], calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return float(np.median(times))


def read_canary() -> CanaryReading:
    """Take one reading now (the first call in a process also allocates its 128 MiB of arrays)."""
    src, dst, a, b, c = _operands()
    at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    start = time.perf_counter()
    copy_ns = _median_ns(lambda: np.copyto(dst, src), COPY_CALLS)
    with threadpool_limits(1, user_api="blas"):
        sgemm_ns = _median_ns(lambda: np.matmul(a, b, out=c), SGEMM_CALLS)
    return CanaryReading(at_utc=at, copy_gbps=2 * src.nbytes / copy_ns, sgemm_gflops=2 * SGEMM_N**3 / sgemm_ns,
                         seconds=time.perf_counter() - start)
