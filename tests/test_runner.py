"""run_point: exceptions at run time become failed rows; nothing computed is lost."""

from __future__ import annotations

import csv

import pytest

import experiments.kv_cache.measure as kv
from experiments.framework.job import JobInfo
from experiments.framework.point import PointApp
from experiments.registry import EXPERIMENTS
from tests.conftest import ROOT
from tests.test_config import composed


def run_point(cfg, job):
    return PointApp(EXPERIMENTS, ROOT).run(cfg, job)

SMALL = ["kv.seq_len=5", "kv.d_model=16", "kv.n_heads=2", "bench.min_sample_s=0.0005"]


def rows(path):
    with open(path / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_variant_that_raises_fails_alone(tmp_path, monkeypatch):
    real = kv.generate

    def flaky(model, x, p, strategy, **kw):
        if kv.Strategy(strategy) is kv.Strategy.concat:
            raise RuntimeError("boom in concat")
        return real(model, x, p, strategy, **kw)

    monkeypatch.setattr(kv, "generate", flaky)
    outcome = run_point(composed(*SMALL), JobInfo(tmp_path, ("kv.seq_len=5",), 3, "r1"))
    assert outcome.status == "failed" and outcome.errors == ["concat: RuntimeError: boom in concat"]
    got = {r["variant"]: r for r in rows(tmp_path)}
    assert [got[v]["status"] for v in ("recompute", "concat", "prealloc")] == ["ok", "failed", "ok"]
    assert got["concat"]["error"] == "RuntimeError: boom in concat" and got["concat"]["time_median_s"] == ""
    assert float(got["prealloc"]["speedup_vs_recompute"]) > 0  # the others kept their numbers
    assert got["prealloc"]["job_num"] == "3" and got["prealloc"]["run_id"] == "r1"


def test_an_exception_outside_the_variants_fails_the_point(tmp_path, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError("cannot allocate")

    monkeypatch.setattr(kv, "init_decoder", no_memory)
    outcome = run_point(composed(*SMALL), JobInfo(tmp_path))
    assert outcome.status == "failed"
    (row,) = rows(tmp_path)
    assert row["status"] == "failed" and row["error"] == "MemoryError: cannot allocate"
    assert row["kv.seq_len"] == "5" and row["seed"] == "0"


def test_counts_that_disagree_with_the_formulas_fail_the_variant(tmp_path, monkeypatch):
    monkeypatch.setattr(kv, "expected_kv_projections", lambda strategy, p, n: -1)
    outcome = run_point(composed(*SMALL, "kv.strategies=[prealloc]"), JobInfo(tmp_path))
    assert outcome.status == "failed"
    assert "!= closed-form" in rows(tmp_path)[0]["error"]


@pytest.mark.parametrize("seed", [0, 1])
def test_non_timing_metrics_repeat_exactly(tmp_path, seed):
    a = rows_of(tmp_path / "a", seed)
    b = rows_of(tmp_path / "b", seed)
    for ra, rb in zip(a, b, strict=True):
        for col in ("kv_projections", "flops", "cache_bytes_copied", "kv_cache_bytes", "max_abs_err_vs_ref",
                    "config_hash"):
            assert ra[col] == rb[col], col


def rows_of(path, seed):
    run_point(composed(*SMALL, f"seed={seed}"), JobInfo(path))
    return rows(path)
