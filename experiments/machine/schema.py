"""Knobs of the machine measurement, under ``machine.*``: each default written once, here."""

from __future__ import annotations

from dataclasses import dataclass

from experiments.framework.spec import Knobs, knob, require
from infer_core.measure.machine import GEMM_SIZES

KEY = "machine"


@dataclass
class MachineConfig(Knobs):
    """Measure this machine's GEMM peaks and memory bandwidth at `bench.threads` and cache them."""

    gemm_sizes: list[int] = knob(list(GEMM_SIZES), "square GEMM sizes whose best GFLOP/s is the peak")
    stream_mib: int | None = knob(None, "MiB per STREAM array (null: 4× the last-level cache, at least 128)")

    def __post_init__(self) -> None:
        require(len(self.gemm_sizes) > 0 and min(self.gemm_sizes) >= 64,
                f"{KEY}.gemm_sizes={list(self.gemm_sizes)} needs at least one size >= 64")
        require(self.stream_mib is None or self.stream_mib >= 1, f"{KEY}.stream_mib={self.stream_mib} must be >= 1")
