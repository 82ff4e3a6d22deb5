"""sweep.rounds: a timed point measured in passes spread over the sweep, its samples merged, a canary before each
pass; complete only when every pass is; resumed after the passes its folder holds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from experiments.framework.job import JobInfo
from experiments.framework.passes import PASSES
from experiments.framework.point import PointApp
from experiments.registry import EXPERIMENTS
from infer_core.measure.timing import Timing
from tests.conftest import FAST_BENCH, ROOT, run_app, small_machine_file
from tests.test_config import composed

KV = ["kv.seq_len=5", "kv.d_model=16", "kv.n_heads=2", "bench.min_sample_s=0.0005"]


def test_timings_of_several_passes_merge_with_their_own_inner_loop_counts():
    first = Timing((4_000, 8_000), (4_000, 8_000), 2, 1)  # 2 calls per sample: 2 and 4 µs per call
    later = Timing((3_000,), (0,), (3,), 5)  # 3 calls: 1 µs per call
    both = first.merged(later)
    assert both.inner_loops == (2, 2, 3) and both.warmup == 1 and both.n == 3
    assert np.allclose(both.per_call_s, [2e-6, 4e-6, 1e-6]) and both.median == pytest.approx(2e-6)
    assert both.stats()["inner_loops"] == 2
    with pytest.raises(ValueError, match="as many CPU times and loop counts as samples"):
        Timing((1, 2), (1,), 1, 1)


def test_a_sweep_in_three_rounds_measures_every_point_in_each_pass_in_turn(tmp_path):
    machine = small_machine_file(tmp_path / "machine.json", threads=(1,))
    proc = run_app("-m", "experiment=matmul", "matmul.size=64,96", "matmul.weights=[fp32]", "bench.threads=1",
                   f"bench.machine_file={machine}", "sweep.rounds=3", *FAST_BENCH, f"hydra.sweep.dir={tmp_path / 's'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    points = sorted(p for p in (tmp_path / "s").iterdir() if p.is_dir())
    canaries = pd.concat([pd.read_csv(p / "canary.csv") for p in points]).sort_values("at_utc")
    # pass 1 of both points, then pass 2 of both, then pass 3: the passes are spread over the sweep, and each pass
    # runs the points in the order opposite to the one before (neighbours take turns going first)
    assert list(canaries["pass"]) == [1, 1, 2, 2, 3, 3] and (canaries["copy_gbps"] > 0).all()
    assert list(canaries["job_num"]) == [0, 1, 1, 0, 0, 1]
    for p in points:
        samples = pd.read_csv(p / "samples.csv")
        assert list(samples["pass"]) == [1] * 5 + [2] * 5 + [3] * 5 and list(samples["sample"]) == list(range(15))
        row = pd.read_csv(p / "results.csv").iloc[0]
        assert row["n_samples"] == 15 and row["time_median_s"] == pytest.approx(samples["time_s"].median())
        manifest = json.loads((p / "point.json").read_text())
        assert manifest["passes"] == 3 and "canary.csv" in manifest["files"] and not (p / PASSES).exists()
    progress = [line for line in (proc.stdout + proc.stderr).splitlines() if "(pass " in line and "] job " in line]
    assert [line.split("] job")[0].split("[")[-1].split(",")[0] for line in progress] == [
        f"{k}/6" for k in range(1, 7)]  # progress counts passes


def test_an_earlier_pass_is_kept_aside_and_a_resumed_point_continues_after_it(tmp_path):
    app, cfg = PointApp(EXPERIMENTS, ROOT), composed(*KV)
    first = app.run(cfg, JobInfo(tmp_path, ("kv.seq_len=5",), pass_num=1, passes=2))
    assert first.status == "ok" and first.summary.startswith("pass 1 of 2: ")
    assert not (tmp_path / "point.json").exists() and not (tmp_path / "results.csv").exists()  # not complete
    record = json.loads((tmp_path / PASSES).read_text())
    kept = record["passes"][0]["calls"]["0/recompute"]["sample_ns"]  # kv_cache times its strategies together
    assert len(record["passes"]) == 1 and record["passes"][0]["canary"]["copy_gbps"] > 0
    done = app.run(cfg, JobInfo(tmp_path, ("kv.seq_len=5",), pass_num=2, passes=2))
    assert done.status == "ok" and json.loads((tmp_path / "point.json").read_text())["passes"] == 2
    samples = pd.read_csv(tmp_path / "samples.csv")
    recompute = samples[samples["variant"] == "recompute"]
    assert list(recompute["pass"]) == [1] * 5 + [2] * 5
    per_call = np.asarray(kept) / recompute["inner_loops"].to_numpy()[:5] / 1e9
    assert np.allclose(recompute["time_s"].to_numpy()[:5], per_call, rtol=1e-12)  # pass 1 as it was recorded
    assert list(pd.read_csv(tmp_path / "canary.csv")["pass"]) == [1, 2]


def test_a_pass_without_its_earlier_ones_or_timing_other_calls_fails_in_one_line(tmp_path):
    app = PointApp(EXPERIMENTS, ROOT)
    lost = app.run(composed(*KV), JobInfo(tmp_path / "a", pass_num=2, passes=2))
    assert lost.status == "failed" and lost.errors == [
        "RuntimeError: pass 2 of 2 cannot run: its folder holds 0 earlier pass(es) of this config (passes.json)"]
    assert app.run(composed(*KV), JobInfo(tmp_path / "b", pass_num=1, passes=2)).status == "ok"
    record = json.loads((tmp_path / "b" / PASSES).read_text())
    record["passes"][0]["calls"]["7"] = record["passes"][0]["calls"]["0/recompute"]  # a call pass 2 will not make
    (tmp_path / "b" / PASSES).write_text(json.dumps(record))
    other = app.run(composed(*KV), JobInfo(tmp_path / "b", pass_num=2, passes=2))
    assert other.status == "failed" and "pass 2 timed 3 call(s) where the earlier passes timed 4" in other.errors[0]


def test_a_sweep_resumes_after_the_passes_already_done(tmp_path):
    """Pass 1 of one point already in its folder: the sweep runs pass 2 of it and both passes of the other."""
    sweep = tmp_path / "s"
    args = ["-m", "kv.seq_len=5,6", "kv.d_model=16", "kv.n_heads=2", "bench.min_sample_s=0.0005",
            f"hydra.sweep.dir={sweep}", "sweep.rounds=2"]
    folder = sweep / "kv.seq_len=5,kv.d_model=16,kv.n_heads=2,bench.min_sample_s=0.0005"
    app = PointApp(EXPERIMENTS, ROOT)
    assert app.run(composed(*KV), JobInfo(folder, pass_num=1, passes=2)).status == "ok"
    kept = json.loads((folder / PASSES).read_text())["passes"][0]["canary"]["at_utc"]
    proc = run_app(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = proc.stdout + proc.stderr
    assert "resuming 1 point(s) after the passes already in their folders" in said
    assert "[3/3" in said and "[4/" not in said  # 3 passes left to run, not 4
    canary = pd.read_csv(folder / "canary.csv")
    assert list(canary["pass"]) == [1, 2] and canary["at_utc"].iloc[0] == kept


@pytest.mark.parametrize("value, rule", [
    ("0", "sweep.rounds=0 must be an integer >= 1"),
    ("3", "sweep.rounds=3 applies to the timed experiments (kv_cache, quantization, matmul, engine, attention); "
          "experiment=kv_memory is measured once per point"),
])
def test_rounds_are_refused_where_they_cannot_apply(tmp_path, value, rule):
    extra = ["experiment=kv_memory"] if value == "3" else ["kv.seq_len=5"]
    proc = run_app("-m", *extra, f"sweep.rounds={value}", f"hydra.sweep.dir={tmp_path / 's'}")
    assert proc.returncode == 1 and rule in proc.stderr and "Traceback" not in proc.stderr


def test_a_single_run_takes_its_passes_back_to_back(tmp_path):
    proc = run_app(*KV, "sweep.rounds=2", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    samples = pd.read_csv(tmp_path / "run" / "samples.csv")
    assert sorted(samples["pass"].unique()) == [1, 2] and len(samples) == 3 * 2 * 5  # 3 strategies, 2 passes of 5
    assert json.loads((tmp_path / "run" / "point.json").read_text())["passes"] == 2
