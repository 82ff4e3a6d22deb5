"""End to end: a sweep with a bad point, its CSVs, and the report made from them."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pandas as pd
import pytest

from experiments.framework.store import SCHEMA_VERSION
from experiments.registry import EXPERIMENTS
from experiments.reporting import gather
from tests.conftest import FAST_BENCH, ROOT, job_dirs, run_app


def build_report(folders, out, machine_file=ROOT / "outputs" / "machine.json"):
    return gather.build_report(folders, out, machine_file, EXPERIMENTS)

KEY_COLUMNS = [
    "experiment", "variant", "status", "error", "kv.seq_len", "kv.d_model", "kv.n_heads", "seed",
    "time_median_s", "time_iqr_s", "tokens_per_s", "kv_projections", "kv_cache_bytes",
    "max_abs_err_vs_ref", "speedup_vs_recompute", "blas_threads", "numpy", "git_commit",
]


def read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_sweep_with_a_bad_point_writes_the_good_ones_and_exits_nonzero(small_sweep):
    sweep, proc = small_sweep
    assert proc.returncode == 1, proc.stderr
    assert "1 of 3 point(s) failed" in proc.stderr
    assert "kv.seq_len=0" in proc.stderr and "kv.seq_len=0 must be >= 1" in proc.stderr
    jobs = {int(read(j / "results.csv")[0]["kv.seq_len"]): j for j in job_dirs(sweep)}
    assert sorted(jobs) == [0, 6, 12]
    for n in (6, 12):
        job = jobs[n]
        assert job.name == f"kv.seq_len={n},kv.d_model=16,kv.n_heads=2,bench.repeats=5,bench.min_sample_s=0.0005"
        rows = read(job / "results.csv")
        assert [r["variant"] for r in rows] == ["recompute", "concat", "prealloc"]
        assert all(r["status"] == "ok" and r["error"] == "" for r in rows)
        header = list(rows[0])
        assert all(c in header for c in KEY_COLUMNS)
        assert header[:7] == ["schema_version", "experiment", "variant", "run_id", "job_num", "overrides",
                              "config_hash"]
        assert header[-2:] == ["status", "error"]
        assert not any(c.startswith("sweep.") for c in header)  # run control is not part of a result
        for r in rows:
            assert int(r["kv.seq_len"]) == n and r["seed"] == "0" and r["schema_version"] == str(SCHEMA_VERSION)
            assert float(r["max_abs_err_vs_ref"]) < 1e-4
            assert int(r["blas_threads"]) >= 1
        projections = {r["variant"]: int(r["kv_projections"]) for r in rows}
        assert projections == {"recompute": n * (n + 1) // 2, "concat": n, "prealloc": n}
        assert float(rows[0]["speedup_vs_recompute"]) == 1.0
        samples = read(job / "samples.csv")
        assert len(samples) == 3 * 5 and {s["variant"] for s in samples} == {"recompute", "concat", "prealloc"}
    bad = read(jobs[0] / "results.csv")
    assert len(bad) == 1 and bad[0]["status"] == "failed"
    assert bad[0]["error"] == "kv.seq_len=0 must be >= 1" and bad[0]["time_median_s"] == ""
    assert list(bad[0]) == list(read(jobs[6] / "results.csv")[0])  # same columns as the good rows
    assert not list(sweep.rglob(".*.tmp*")), "no temporary file may be left behind"


def test_report_on_the_sweep(small_sweep, tmp_path):
    sweep, _ = small_sweep
    out = tmp_path / "report"
    md = build_report([sweep], out).read_text()
    for name in ("results.csv", "report.md", "kv_cache_time_vs_seq_len.png",
                 "kv_cache_projections_vs_seq_len.png", "kv_cache_speedup_vs_seq_len.png"):
        assert (out / name).stat().st_size > 0, name
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 7 and (df["status"] == "failed").sum() == 1
    assert "### Failed points" in md and "kv.seq_len=0 must be >= 1" in md
    assert "### Scaling of total generation time" in md
    for variant in ("recompute", "concat", "prealloc"):
        assert f"| {variant} | 2 |" in md  # two seq_len points fitted per strategy
    assert "![Time vs sequence length](kv_cache_time_vs_seq_len.png)" in md
    # the report's own results.csv is not read back as input
    build_report([sweep], sweep / "report")
    assert len(pd.read_csv(sweep / "report" / "results.csv")) == 7


def test_report_cli_default_is_the_newest_sweep(small_sweep, tmp_path):
    sweep, _ = small_sweep
    (tmp_path / "outputs" / "sweeps").mkdir(parents=True)
    (tmp_path / "outputs" / "sweeps" / "s1").symlink_to(sweep, target_is_directory=True)
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "report.py")], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (sweep / "report" / "report.md").exists()
    empty = subprocess.run([sys.executable, str(ROOT / "experiments" / "report.py")], cwd=tmp_path / "outputs",
                           capture_output=True, text=True)
    assert empty.returncode == 1 and "no sweep under outputs/sweeps/" in empty.stderr


def test_report_skips_unknown_schema_versions(small_sweep, tmp_path):
    sweep, _ = small_sweep
    old = tmp_path / "old"
    old.mkdir()
    rows = (job_dirs(sweep)[0] / "results.csv").read_text().splitlines()
    rows[1] = "99" + rows[1][1:]
    (old / "results.csv").write_text("\n".join(rows[:2]) + "\n")
    md = build_report([sweep, old], tmp_path / "r").read_text()
    assert "old/results.csv: schema_version 99, this report reads 2" in md


def test_single_run_default_dir_and_budget_skip(tmp_path):
    proc = run_app("kv.seq_len=40", "kv.d_model=16", "kv.n_heads=2", "bench.max_seconds=0.002", *FAST_BENCH,
                   cwd=tmp_path)
    assert proc.returncode == 1 and "nothing measured" in proc.stderr, proc.stderr  # skipped is not complete
    (results,) = list((tmp_path / "outputs" / "runs").glob("*/results.csv"))
    rows = read(results)
    assert [r["status"] for r in rows] == ["skipped"] * 3
    assert all(r["error"].startswith("over bench.max_seconds=0.002: ") for r in rows)
    assert all(r["time_median_s"] == "" for r in rows)


def test_sweep_preset_and_command_line_precedence(tmp_path):
    """sweep=demo_kv sets six lengths; a command-line value for the same key wins."""
    proc = run_app("sweep=demo_kv", "kv.seq_len=5", "kv.strategies=[prealloc]", f"hydra.sweep.dir={tmp_path}",
                   *FAST_BENCH)
    assert proc.returncode == 0, proc.stderr
    (job,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (row,) = read(job / "results.csv")
    assert row["kv.seq_len"] == "5" and row["kv.d_model"] == "64" and row["kv.n_heads"] == "4"
    assert row["bench.threads"] == "1" and row["blas_threads"] == "1"  # the preset pins BLAS to one thread
    assert row["speedup_vs_recompute"] == ""  # no recompute in this point


@pytest.mark.parametrize("module", ["infer_core", "infer_core.decoder", "infer_core.serving", "infer_core.measure",
                                    "infer_core.decoder.decode", "infer_core.measure.timing", "infer_core.quant",
                                    "infer_core.measure.machine", "infer_core.matmul", "infer_core.model",
                                    "infer_core.serving.scheduler"])
def test_infer_core_stays_plain_numpy(module):
    code = (f"import sys, {module}; bad = {{'hydra', 'omegaconf', 'pandas', 'matplotlib', 'seaborn'}} "
            "& {m.split('.')[0] for m in sys.modules}; print(sorted(bad)); sys.exit(bool(bad))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


QUANT_KNOBS = ["quant.rows=64", "quant.cols=256", "quant.group_size=32", "quant.sample_pairs=500"]
QUANT_SMALL = ["experiment=quantization", *QUANT_KNOBS]
QUANT_PNGS = ("quant_weight_histogram.png", "quant_scatter.png", "quant_channel_error.png", "quant_storage.png",
              "quant_sqnr_vs_bits.png")


def test_quantization_sweep_granularity_by_bits_and_its_report(tmp_path):
    sweep = tmp_path / "q"
    # as the README writes it: the quant.* knobs select the quantization experiment
    proc = run_app("-m", "quant.granularity=per_tensor,per_channel,per_group", "quant.bits=8,4", *QUANT_KNOBS,
                   f"hydra.sweep.dir={sweep}", *FAST_BENCH)
    assert proc.returncode == 0, proc.stderr
    rows = [r for job in job_dirs(sweep) for r in read(job / "results.csv")]
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    for col in ("bits_per_weight", "bytes", "compression_vs_fp32", "mae", "max_abs_err", "mse", "rel_l2", "sqnr_db",
                "cosine", "time_median_s", "dequantize_time_median_s", "quantize_gb_per_s"):
        assert all(r[col] != "" for r in rows), col
    by = {(r["quant.granularity"], r["quant.bits"]): r for r in rows}
    assert int(by[("per_group", "4")]["bytes"]) == 64 * 256 // 2 + 64 * 8 * 2
    assert float(by[("per_channel", "8")]["sqnr_db"]) > float(by[("per_tensor", "8")]["sqnr_db"])
    assert float(by[("per_group", "4")]["sqnr_db"]) > float(by[("per_tensor", "4")]["sqnr_db"])
    job0 = job_dirs(sweep)[0]
    assert len(read(job0 / "channel_errors.csv")) == 64 and len(read(job0 / "pairs.csv")) == 500
    assert {s["measure"] for s in read(job0 / "samples.csv")} == {"quantize", "dequantize"}
    md = build_report([sweep], tmp_path / "r").read_text()
    for png in QUANT_PNGS:
        assert (tmp_path / "r" / png).stat().st_size > 0 and f"({png})" in md


def test_quantization_methods_preset_and_mixed_report(tmp_path, small_sweep):
    """Named methods (qmethod=...) sweep as one axis; one report covers two experiments."""
    sweep = tmp_path / "m"
    proc = run_app("-m", *QUANT_SMALL, "qmethod=q4_0,q4_k,nf4,int8_per_channel", f"hydra.sweep.dir={sweep}",
                   *FAST_BENCH)
    assert proc.returncode == 0, proc.stderr
    variants = sorted(r["variant"] for job in job_dirs(sweep) for r in read(job / "results.csv"))
    assert variants == ["int8 symmetric per_channel", "nf4", "q4_0", "q4_k"]
    md = build_report([sweep, small_sweep[0]], tmp_path / "r").read_text()
    assert "## Experiment `kv_cache`" in md and "## Experiment `quantization`" in md


def test_quantization_config_errors(tmp_path):
    proc = run_app("-m", *QUANT_SMALL, "quant.format=q4_k,q8_0", "quant.cols=96", f"hydra.sweep.dir={tmp_path}",
                   *FAST_BENCH)
    assert proc.returncode == 1
    assert "quant.cols=96 must be a multiple of 256 for quant.format=q4_k" in proc.stderr
    assert "1 of 2 sweep point(s) are invalid, nothing was run" in proc.stderr
    assert not list(tmp_path.rglob("results.csv"))


def test_machine_then_matmul_then_a_roofline_over_three_experiments(tmp_path, small_sweep):
    machine_file = tmp_path / "machine.json"
    common = ["bench.threads=1", f"bench.machine_file={machine_file}", *FAST_BENCH]
    # arrays beyond the last-level cache and GEMMs big enough for a real peak: a 4 MiB copy ran from cache
    # and a 128² GEMM under its peak, which put the ridge point below a GEMV's intensity on a slow machine
    proc = run_app("experiment=machine", "machine.gemm_sizes=[128,256]", "machine.stream_mib=64",
                   f"hydra.run.dir={tmp_path / 'm'}", *common)
    assert proc.returncode == 0, proc.stderr
    rows = {r["variant"]: r for r in read(tmp_path / "m" / "results.csv")}
    assert sorted(rows) == ["copy", "dgemm", "read", "sgemm", "triad"]
    assert float(rows["sgemm"]["gflops"]) > 0 and float(rows["copy"]["gb_per_s"]) > 0
    (entry,) = json.loads(machine_file.read_text())["entries"]
    assert entry["key"]["blas_threads"] == 1 and entry["ref"]["gemm_sizes"] == [128, 256]

    mm = tmp_path / "mm"
    proc = run_app("-m", "experiment=matmul", "mmcase=square_256,attn_out_decode", "matmul.d_model=256",
                   f"hydra.sweep.dir={mm}", *common)
    assert proc.returncode == 0, proc.stderr
    got = {(r["matmul.shape"], r["variant"]): r for job in job_dirs(mm) for r in read(job / "results.csv")}
    assert len(got) == 4 and {r["status"] for r in got.values()} == {"ok"}
    sq = got[("square", "fp32")]
    assert int(sq["flops"]) == 2 * 256**3 and int(sq["bytes_moved"]) == 3 * 256 * 256 * 4
    gemv = got[("attn_out", "fp32")]
    assert (int(gemv["m"]), int(gemv["k"]), int(gemv["n"])) == (1, 256, 256)
    assert gemv["bound"] == "bandwidth" and sq["bound"] == "compute"
    assert float(gemv["max_rel_err_vs_ref"]) < 1e-5
    assert 1e-4 < float(got[("attn_out", "int8_dequant")]["max_rel_err_vs_ref"]) < 0.05
    assert float(sq["peak_gflops"]) == entry["ref"]["sgemm_gflops"]  # compared against the cached peak
    assert float(sq["pct_of_roofline"]) == pytest.approx(100 * float(sq["gflops"]) / float(sq["roofline_gflops"]))

    q = tmp_path / "q"
    assert run_app("-m", *QUANT_SMALL, "quant.format=q8_0,q4_0", f"hydra.sweep.dir={q}", *FAST_BENCH).returncode == 0
    md = build_report([mm, q, small_sweep[0]], tmp_path / "r", machine_file).read_text()
    assert "## Roofline" in md and "from kv_cache, matmul, quantization" in md
    assert (tmp_path / "r" / "roofline.png").stat().st_size > 0
    assert "### The four products of a transformer layer" in md and "### GFLOP/s vs size" in md
    no_machine = build_report([mm], tmp_path / "r2", tmp_path / "missing.json").read_text()
    assert "run `python experiments/run.py experiment=machine`" in no_machine
