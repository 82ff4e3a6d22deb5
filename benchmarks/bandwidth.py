"""A kernel's bandwidth as a share of the STREAM copy bandwidth, the two timed interleaved."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from infer_core.measure.machine import copy_kernel
from infer_core.measure.timing import measure_interleaved


@dataclass(frozen=True)
class CopyShare:
    """A kernel timed interleaved with a STREAM copy: medians, and the per-round share."""

    median_s: float  # the kernel's median seconds per call
    gbps: float  # its traffic over its median time
    copy_gbps: float  # the copy's bytes over its median time
    share: np.ndarray  # per round: the kernel's GB/s over the copy's


def share_of_copy(fn: Callable[[], object], n_bytes: int, repeats: int, threads: int | None = None) -> CopyShare:
    """Time ``fn`` (moving ``n_bytes`` per call) in rounds with a copy on ``threads`` threads."""
    with copy_kernel(threads=threads) as copy:
        t = measure_interleaved({"kernel": fn, "copy": copy}, repeats=repeats)
        copy_bytes = copy.n_bytes
    kernel, base = t["kernel"], t["copy"]
    return CopyShare(kernel.median, n_bytes / kernel.median / 1e9, copy_bytes / base.median / 1e9,
                     (n_bytes / kernel.per_call_s) / (copy_bytes / base.per_call_s))
