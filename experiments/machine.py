"""The machine experiment: measure (again) this machine's peaks and bandwidth and cache them.

``python experiments/run.py experiment=machine`` re-measures at the job's BLAS thread count
(``bench.threads``) and rewrites that entry of ``bench.machine_file``; other experiments read the
cache and measure only when no entry matches their key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from experiments.base import BenchConfig, Experiment, VariantResult, require
from infer_core.machine import GEMM_SIZES, measure_machine, reference

KEY = "machine"


@dataclass
class MachineConfig:
    """Knobs of the machine measurement, under ``machine.*``."""

    gemm_sizes: list[int] = field(default_factory=lambda: list(GEMM_SIZES))  # square GEMMs for the peak
    stream_mib: int | None = None  # MiB per STREAM array; null: 4x the last-level cache, >= 128

    def __post_init__(self) -> None:
        require(len(self.gemm_sizes) > 0 and min(self.gemm_sizes) >= 64,
                f"{KEY}.gemm_sizes={list(self.gemm_sizes)} needs at least one size >= 64")
        require(self.stream_mib is None or self.stream_mib >= 1, f"{KEY}.stream_mib={self.stream_mib} must be >= 1")


COLUMNS = ("gflops", "gb_per_s", "gemm_sizes", "stream_bytes", "machine_file")


def run(cfg: MachineConfig, bench: BenchConfig, seed: int) -> list[VariantResult]:
    """Measure and store; one row per figure: sgemm, dgemm (GFLOP/s), copy, triad, read (GB/s)."""
    n_bytes = cfg.stream_mib * 2**20 if cfg.stream_mib else None
    ref, _ = reference(bench.machine_file, force=True,
                       measure_fn=lambda: measure_machine(tuple(cfg.gemm_sizes), n_bytes))
    common = {"gemm_sizes": ",".join(map(str, ref.gemm_sizes)), "stream_bytes": ref.stream_bytes,
              "machine_file": bench.machine_file}
    return [
        VariantResult("sgemm", {"gflops": ref.sgemm_gflops, **common}),
        VariantResult("dgemm", {"gflops": ref.dgemm_gflops, **common}),
        VariantResult("copy", {"gb_per_s": ref.copy_gbps, **common}),
        VariantResult("triad", {"gb_per_s": ref.triad_gbps, **common}),
        VariantResult("read", {"gb_per_s": ref.read_gbps, **common}),
    ]


def summary(results: list[VariantResult]) -> str:
    m = {r.variant: r.metrics for r in results}
    return (f"sgemm {m['sgemm']['gflops']:.1f} GFLOP/s, dgemm {m['dgemm']['gflops']:.1f} GFLOP/s, "
            f"copy {m['copy']['gb_per_s']:.1f} GB/s, triad {m['triad']['gb_per_s']:.1f} GB/s, "
            f"read {m['read']['gb_per_s']:.1f} GB/s")


EXPERIMENT = Experiment(
    name="machine",
    key=KEY,
    schema=MachineConfig,
    columns=COLUMNS,
    run=run,
    report="experiments.machine_report",
    summary=summary,
)
