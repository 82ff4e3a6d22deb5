"""Threads tell the truth: ``bench.threads`` is the thread count of everything a point measures (BLAS and the
experiment's own pools); under a parallel launcher it defaults to the job's share of the cores, and every row
records the count that was used."""

from __future__ import annotations

import pandas as pd
from threadpoolctl import threadpool_info, threadpool_limits

from experiments.framework.bench import point_threads
from tests.conftest import FAST_BENCH, run_app

ATTENTION = ["experiment=attention", "attn.impl=naive,flash", "attn.seq_len=256", "attn.d_head=16", "attn.n_heads=4",
             "attn.check_rows=32", "attn.block_q=64", "attn.block_k=64", *FAST_BENCH]
BATCHING = ["experiment=batching", "batch.policy=static,continuous", "batch.d_model=64", "batch.n_heads=4",
            "batch.n_kv_heads=2", "batch.d_ffn=96", "batch.n_requests=8", "batch.output_len=6", "batch.max_len=48",
            "batch.check_requests=2"]


def test_the_point_thread_count_is_the_blas_limit_it_runs_under():
    for n in (1, 2):
        with threadpool_limits(n, user_api="blas"):
            blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
            assert point_threads() == n == blas[0]


def test_two_parallel_jobs_run_at_one_thread_each_and_say_so(tmp_path):
    for name, args in (("attention", ATTENTION), ("batching", BATCHING)):
        proc = run_app("-m", *args, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                       f"hydra.sweep.dir={tmp_path / name}", timeout=400)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows = pd.concat([pd.read_csv(p) for p in (tmp_path / name).rglob("results.csv")], ignore_index=True)
        assert len(rows) == 2 and (rows["status"] == "ok").all()
        assert (rows["concurrency"] == 2).all()  # two jobs at once on this machine's cores
        assert (rows["blas_threads"] == 1).all() and (rows["n_threads"] == 1).all(), rows[["blas_threads",
                                                                                         "n_threads"]]
    rows = pd.concat([pd.read_csv(p) for p in (tmp_path / "attention").rglob("results.csv")])
    flash = rows[rows["variant"] == "flash"]
    assert (flash["blas_threads_per_worker"] == 1).all()
