"""Run the machine measurement: peaks and bandwidth at the job's BLAS thread count, written to the
machine file (``bench.machine_file``); other experiments read that cache and measure only when it
has no entry for their CPU, NumPy, BLAS and thread count."""

from __future__ import annotations

from experiments.framework.bench import BenchConfig
from experiments.framework.progress import machine_reference
from experiments.framework.spec import Column, VariantResult
from experiments.machine.schema import MachineConfig

COLUMNS = (
    Column("gflops", "GFLOP/s", "sgemm / dgemm rows: best GEMM throughput over `machine.gemm_sizes`"),
    Column("gb_per_s", "GB/s", "copy / triad / read rows: best STREAM-style bandwidth of 10"),
    Column("gemm_sizes", "", "the GEMM sizes measured"),
    Column("stream_bytes", "B", "bytes of one STREAM array"),
    Column("machine_file", "", "where the reference was stored", kind="context"),
)


def run(cfg: MachineConfig, bench: BenchConfig, seed: int) -> list[VariantResult]:
    """Measure and store; one row per figure: sgemm, dgemm (GFLOP/s), copy, triad, read (GB/s)."""
    n_bytes = cfg.stream_mib * 2**20 if cfg.stream_mib else None
    ref, _ = machine_reference(bench.machine_file, force=True, gemm_sizes=tuple(cfg.gemm_sizes), n_bytes=n_bytes)
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
