"""Sweeps that survive: up-front validation, failure lists, resume after SIGKILL, launchers, re-runs."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from experiments.framework.plan import point_dir_name
from tests.conftest import FAST_BENCH, ROOT, job_dirs, run_app

SMALL = ["kv.d_model=16", "kv.n_heads=2", "bench.threads=1", *FAST_BENCH]
DETERMINISTIC = ["kv_projections", "flops", "bytes_moved", "cache_bytes_copied", "kv_cache_bytes",
                 "max_abs_err_vs_ref", "config_hash", "seed"]


def rows_of(sweep) -> list[dict]:
    return [r for job in job_dirs(sweep) for r in csv.DictReader(open(job / "results.csv"))]


def by_point(rows) -> dict:
    return {(r["kv.seq_len"], r["variant"]): {k: r[k] for k in DETERMINISTIC} for r in rows}


def test_point_dir_names_are_stable_and_safe():
    assert point_dir_name(["kv.seq_len=10", "sweep=demo_kv"]) == "kv.seq_len=10,sweep=demo_kv"
    assert point_dir_name(["a.path=/data/x", "b=k=v", "c='x y'"]) == "a.path=%2Fdata%2Fx,b=k=v,c=%27x%20y%27"
    assert point_dir_name(["sweep.resume=false", "hydra.launcher.n_jobs=2"]) == "defaults"
    long = point_dir_name([f"k{i}=value{i}" for i in range(40)])
    assert len(long) <= 120 and long == point_dir_name([f"k{i}=value{i}" for i in range(40)])
    assert long != point_dir_name([f"k{i}=value{i}" for i in range(41)])
    assert long.rsplit("-", 1)[0].endswith(",k9=value9")  # cut between overrides, not in a word
    assert point_dir_name(["serve.url=http\\://127.0.0.1\\:18123"]) == "serve.url=http:%2F%2F127.0.0.1:18123"


def test_an_invalid_point_stops_the_sweep_before_anything_runs(tmp_path):
    proc = run_app("-m", "kv.seq_len=range(0,500)", f"hydra.sweep.dir={tmp_path}", *SMALL)
    assert proc.returncode == 1
    assert "1 of 500 sweep point(s) are invalid, nothing was run" in proc.stderr
    assert "#0 kv.seq_len=0 " in proc.stderr and "kv.seq_len=0 must be >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("results.csv"))
    typo = run_app("-m", "kv.seq_len=4,8", "kv.d_model=16,60", "kv.n_heads=8", f"hydra.sweep.dir={tmp_path}")
    assert typo.returncode == 1 and "2 of 4 sweep point(s) are invalid" in typo.stderr
    assert "kv.d_model=60 must be divisible by kv.n_heads=8" in typo.stderr


def test_run_time_failures_are_rows_and_all_are_listed(tmp_path):
    """Points that pass validation but fail when run (here: too large for memory)."""
    proc = run_app("-m", "kv.seq_len=5,1000000000,2000000000", "kv.strategies=[prealloc]",
                   f"hydra.sweep.dir={tmp_path}", *SMALL)
    assert proc.returncode == 1
    assert "2 of 3 point(s) failed" in proc.stderr
    assert proc.stderr.count("kv point needs about") == 2
    status = {r["kv.seq_len"]: r["status"] for r in rows_of(tmp_path)}
    assert status == {"5": "ok", "1000000000": "failed", "2000000000": "failed"}


def test_sigkill_then_resume_completes_only_the_missing_points(tmp_path):
    args = [sys.executable, str(ROOT / "experiments" / "run.py"), "-m", "kv.seq_len=40,41,42,43,44,45",
            "kv.d_model=32", "kv.n_heads=2", "bench.repeats=5", "bench.min_sample_s=0.05", "bench.threads=1",
            f"hydra.sweep.dir={tmp_path}"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("*/point.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # complete: the manifest, written last, exists (a kill between a point's rows and its manifest leaves
    # a point that is not complete, and that runs again)
    first = {p.parent.name: (p.parent / "results.csv").stat().st_mtime_ns for p in tmp_path.glob("*/point.json")}
    assert 2 <= len(first) < 6, "the kill should land mid-sweep"
    for path in tmp_path.glob("*/results.csv"):  # whatever exists is whole: written atomically
        rows = list(csv.DictReader(open(path)))
        assert len(rows) == 3 and {r["status"] for r in rows} == {"ok"}

    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"skipping {len(first)} complete point(s)" in again.stdout
    rows = rows_of(tmp_path)
    assert len(rows) == 18 and len({(r["kv.seq_len"], r["variant"]) for r in rows}) == 18
    for name, mtime in first.items():
        assert (tmp_path / name / "results.csv").stat().st_mtime_ns == mtime  # not recomputed
    fresh = subprocess.run([*args, "sweep.resume=false", "kv.seq_len=40"], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert fresh.returncode == 0 and "skipping" not in fresh.stdout


@pytest.mark.parametrize("launcher", [["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                                      ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"]])
def test_launchers_give_the_same_metrics_as_the_basic_one(tmp_path, launcher):
    basic = run_app("-m", "kv.seq_len=5,9", f"hydra.sweep.dir={tmp_path / 'basic'}", *SMALL)
    other = run_app("-m", "kv.seq_len=5,9", f"hydra.sweep.dir={tmp_path / 'other'}", *SMALL, *launcher)
    assert basic.returncode == 0 and other.returncode == 0, other.stderr
    a, b = rows_of(tmp_path / "basic"), rows_of(tmp_path / "other")
    assert len(a) == len(b) == 6 and by_point(a) == by_point(b)
    assert {r["concurrency"] for r in b} == {"2"}  # both launchers run the two points at once
    assert {r["concurrency"] for r in a} == {"1"}


def test_parallel_jobs_share_the_cores_unless_told(tmp_path):
    proc = run_app("-m", "kv.seq_len=5,9", "kv.d_model=16", "kv.n_heads=2", f"hydra.sweep.dir={tmp_path}",
                   "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *FAST_BENCH)
    assert proc.returncode == 0, proc.stderr
    cores = len(os.sched_getaffinity(0))
    assert {r["blas_threads"] for r in rows_of(tmp_path)} == {str(max(1, cores // 2))}


def test_a_job_re_run_from_its_saved_config_reproduces_its_metrics(tmp_path):
    assert run_app("-m", "kv.seq_len=7", f"hydra.sweep.dir={tmp_path / 's'}", *SMALL).returncode == 0
    (job,) = job_dirs(tmp_path / "s")
    proc = run_app("--config-dir", str(job / ".hydra"), "--config-name", "config", f"hydra.run.dir={tmp_path / 'r'}")
    assert proc.returncode == 0, proc.stderr
    again = list(csv.DictReader(open(tmp_path / "r" / "results.csv")))
    assert by_point(again) == by_point(rows_of(tmp_path / "s"))


def test_sweep_name_picks_the_folder(tmp_path):
    proc = run_app("-m", "kv.seq_len=3", "sweep.name=my_sweep", *SMALL, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(job_dirs(tmp_path / "outputs" / "sweeps" / "my_sweep")) == 1


def test_the_slurm_launcher_config_composes():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="infer_sweep", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=cpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.cpus_per_task, launcher.array_parallelism) == ("cpu", 2, 64)


def test_launcher_concurrency():
    from omegaconf import OmegaConf

    from experiments.framework.launch import launcher_concurrency

    def conf(**kw):
        return OmegaConf.create(kw)

    cpus = os.cpu_count()
    assert launcher_concurrency(conf(_target_="hydra._internal.core_plugins.basic_launcher.BasicLauncher"), 9) == 1
    assert launcher_concurrency(conf(_target_="x.JoblibLauncher", n_jobs=3), 9) == 3
    assert launcher_concurrency(conf(_target_="x.JoblibLauncher", n_jobs=-1), 99) == cpus
    assert launcher_concurrency(conf(_target_="x.JoblibLauncher", n_jobs=8), 2) == 2
    assert launcher_concurrency(conf(_target_="hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
                                     tasks_per_node=1), 7) == 7
    assert launcher_concurrency(conf(_target_="x.SlurmLauncher", array_parallelism=64), 10) == 10
    ray = conf(_target_="x.RayLauncher", ray={"init": {"num_cpus": 8}, "remote": {"num_cpus": 2}})
    assert launcher_concurrency(ray, 10) == 4
