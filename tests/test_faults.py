"""Faults that lost or faked data, one regression test per class (the numbers are issue 11's items)."""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from experiments.framework import store
from tests.conftest import FAST_BENCH, ROOT, job_dirs, run_app
from tests.faults import TINY_KV, check_complete, resize_tmpfs, small_disk, sweep_cmd

QUANT = ["experiment=quantization", "qmethod=q8_0,q4_0", "bench.min_sample_s=0.001"]


def rows(folder):
    return list(csv.DictReader(open(folder / "results.csv", newline="")))


# 1. a full disk: the point fails in one line, and a rerun recomputes it --------------------------------
def test_1_a_full_disk_fails_the_points_and_resume_recomputes_them(tmp_path, monkeypatch):
    disk = tmp_path / "small"
    with small_disk(disk, "400k") as real:
        if not real:  # no mount here (not root): the failure injected where files are written, in-process
            pytest.skip("cannot mount a tmpfs here; test_1_injected_enospc covers the failure")
        proc = run_app(*sweep_cmd(*QUANT, f"hydra.sweep.dir={disk / 'q'}")[2:])
        assert proc.returncode == 1
        assert "2 of 2 point(s) failed" in proc.stderr and proc.stderr.count("No space left on device") == 2
        assert "Traceback" not in proc.stderr and "Logging error" not in proc.stderr + proc.stdout
        assert not list((disk / "q").rglob("point.json")), "no point may count as complete"
        if real:
            resize_tmpfs(disk, "64m")
        again = run_app(*sweep_cmd(*QUANT, f"hydra.sweep.dir={disk / 'q'}")[2:])
        assert again.returncode == 0, again.stderr
        assert "skipping" not in again.stdout  # both recomputed, not trusted
        for job in job_dirs(disk / "q"):
            assert len(list(csv.DictReader(open(job / "pairs.csv")))) == 10_000


def test_1_injected_enospc_fails_the_point_in_one_line(tmp_path, monkeypatch):
    """Where no tmpfs can be mounted, the same failure injected at the write: one line, point failed."""
    from experiments.framework.job import JobInfo
    from experiments.framework.point import PointApp
    from experiments.registry import EXPERIMENTS
    from tests.test_config import composed

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "write_sidecar", full)
    outcome = PointApp(EXPERIMENTS, ROOT).run(composed("experiment=quantization", "quant.rows=8", "quant.cols=64",
                                                       *FAST_BENCH), JobInfo(tmp_path))
    assert outcome.status == "failed"
    assert outcome.errors == [f"could not write the point's files in {tmp_path}: OSError: [Errno 28] No space "
                              "left on device"]
    assert store.read_manifest(tmp_path) is None


# 2. resume compares the effective config, not only the overrides ---------------------------------------
def test_2_resume_reruns_a_point_whose_preset_changed(tmp_path):
    conf = tmp_path / "conf" / "sweep"
    conf.mkdir(parents=True)
    preset = ("# @package _global_\ndefaults:\n  - override /experiment: kv_cache\nhydra:\n  mode: MULTIRUN\n"
              "  sweeper:\n    params:\n      kv.seq_len: 3,4\nkv:\n  d_model: {d}\n  n_heads: 2\n")
    (conf / "mine.yaml").write_text(preset.format(d=8))
    args = ["sweep=mine", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", f"hydra.sweep.dir={tmp_path / 's'}",
            *FAST_BENCH]
    assert run_app(*args).returncode == 0
    same = run_app(*args)
    assert "(2 already complete)" in same.stdout
    (conf / "mine.yaml").write_text(preset.format(d=16))
    changed = run_app(*args)
    assert changed.returncode == 0 and "already complete" not in changed.stdout
    assert "kv.d_model: 8 -> 16" in changed.stdout
    assert {r["kv.d_model"] for job in job_dirs(tmp_path / "s") for r in rows(job)} == {"16"}


# 3. one sweep per folder at a time ---------------------------------------------------------------------
def test_3_a_second_sweep_on_the_same_folder_is_refused_and_a_stale_lock_taken_over(tmp_path):
    sweep = tmp_path / "s"
    first = subprocess.Popen(sweep_cmd("kv.seq_len=30,31,32,33", "kv.d_model=16", "kv.n_heads=2",
                                       "bench.min_sample_s=0.05", "bench.threads=1", f"hydra.sweep.dir={sweep}"),
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (sweep / ".sweep.lock").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    second = run_app("-m", "kv.seq_len=30", "kv.d_model=16", "kv.n_heads=2", f"hydra.sweep.dir={sweep}")
    out, err = first.communicate(timeout=300)
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert f"{sweep} is in use by another sweep (pid {first.pid} on {socket.gethostname()}" in second.stderr
    assert first.returncode == 0, err
    assert "all 4 point(s) ok" in out and not (sweep / ".sweep.lock").exists()
    assert {r["concurrency"] for job in job_dirs(sweep) for r in rows(job)} == {"1"}

    dead = subprocess.Popen(["true"])
    dead.wait()
    (sweep / ".sweep.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    taken = run_app("-m", "kv.seq_len=30", "kv.d_model=16", "kv.n_heads=2", "bench.min_sample_s=0.05",
                    "bench.threads=1", f"hydra.sweep.dir={sweep}")
    assert taken.returncode == 0, taken.stderr


# 4. a machine file that is not ours is never overwritten -----------------------------------------------
def test_4_a_machine_file_that_is_not_a_reference_is_refused_and_kept(tmp_path):
    notes = tmp_path / "notes.csv"
    notes.write_text("a,b\n1,2\n")
    proc = run_app("experiment=matmul", "mmcase=square_256", f"bench.machine_file={notes}",
                   f"hydra.run.dir={tmp_path / 'r'}", *FAST_BENCH)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{notes} is not a machine reference" in proc.stderr
    assert notes.read_text() == "a,b\n1,2\n"


# 5. a stale roof: impossible figures are flagged with the fix ------------------------------------------
def test_5_a_point_above_its_roof_is_flagged_in_the_row_and_the_report(tmp_path):
    from tests.test_sweep_and_report import build_report

    machine = tmp_path / "machine.json"
    common = ["bench.threads=1", f"bench.machine_file={machine}", *FAST_BENCH]
    assert run_app("experiment=machine", "machine.gemm_sizes=[64]", "machine.stream_mib=4",
                   f"hydra.run.dir={tmp_path / 'm'}", *common).returncode == 0
    data = json.loads(machine.read_text())
    for entry in data["entries"]:  # a reference from a much slower machine
        for k in ("sgemm_gflops", "dgemm_gflops", "copy_gbps", "triad_gbps", "read_gbps"):
            entry["ref"][k] /= 1000
    machine.write_text(json.dumps(data))
    proc = run_app("-m", "experiment=matmul", "mmcase=square_256", f"hydra.sweep.dir={tmp_path / 'mm'}", *common)
    assert proc.returncode == 0, proc.stderr
    assert "ABOVE the roofline: the machine reference is stale, re-measure it with experiment=machine" in proc.stdout
    (job,) = job_dirs(tmp_path / "mm")
    assert {r["above_roofline"] for r in rows(job)} == {"True"}
    md = build_report([tmp_path / "mm"], tmp_path / "r", machine).read_text()
    assert "point(s) lie more than 10% above their roof" in md
    assert "python experiments/run.py experiment=machine bench.threads=1" in md


# 6 and acceptance 3: the report never crashes on a sweep folder ---------------------------------------
def test_6_report_on_odd_sweeps_and_salted_folders(tmp_path, small_sweep):
    no_recompute = tmp_path / "nr"
    assert run_app("-m", "kv.seq_len=3,4", "kv.strategies=[prealloc,concat]", "kv.d_model=8", "kv.n_heads=2",
                   f"hydra.sweep.dir={no_recompute}", *FAST_BENCH).returncode == 0
    all_failed = tmp_path / "af"
    assert run_app("-m", "kv.seq_len=0,-1", "sweep.skip_invalid=true", f"hydra.sweep.dir={all_failed}").returncode == 1
    salted = tmp_path / "salted"
    good = job_dirs(small_sweep[0])[-1] / "results.csv"  # a point with three rows
    text = good.read_text()
    for name, content in {"empty": b"", "binary": bytes(range(256)) * 4,
                          "truncated": text[: text.index("\n", text.index("\n") + 1) + 40].encode(),
                          "unrelated": b"name,age\nada,36\n"}.items():
        (salted / name).mkdir(parents=True)
        (salted / name / "results.csv").write_bytes(content)
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "report.py"), str(no_recompute),
                           str(all_failed), str(salted), str(small_sweep[0]), "--out", str(tmp_path / "r")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    md = (tmp_path / "r" / "report.md").read_text()
    for name, why in (("empty", "empty file"), ("binary", "not UTF-8 text"), ("truncated", "incomplete row(s)"),
                      ("unrelated", "not a job's results")):
        (line,) = [x for x in md.splitlines() if f"{salted / name / 'results.csv'}: " in x]
        assert why in line and f"{salted / name}" in proc.stderr
    merged = list(csv.DictReader(open(tmp_path / "r" / "results.csv")))
    good_rows = 2 * 2 + 2 + 7  # no-recompute sweep, the two failed points, the shared small sweep
    assert len(merged) == good_rows + 1  # plus the truncated file's one complete row
    assert (tmp_path / "r" / "kv_cache_time_vs_seq_len.png").exists()


# 7. Ctrl-C: one line, exit 130, nothing partial, resumable ---------------------------------------------
def test_7_sigint_mid_sweep_says_what_is_complete_and_exits_130(tmp_path):
    sweep = tmp_path / "s"
    cmd = sweep_cmd("kv.seq_len=40,41,42,43", "kv.d_model=16", "kv.n_heads=2", "bench.min_sample_s=0.05",
                    "bench.threads=1", f"hydra.sweep.dir={sweep}")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(sweep.glob("*/point.json"))) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("interrupted: ") and f"complete in {sweep}; run the same command again" in err
    assert not list(sweep.rglob(".*.tmp*"))
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already complete" in again.stdout
    check_complete(sweep, 4, 3)


# 8. a worker killed under joblib fails its own point only ----------------------------------------------
def _process_writing_into(folder, parent: int) -> int | None:
    """The child of ``parent`` that has a file in ``folder`` open (a joblib worker running that point)."""
    for child in subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split():
        try:
            if any(str(folder) in os.readlink(f"/proc/{child}/fd/{fd}") for fd in os.listdir(f"/proc/{child}/fd")):
                return int(child)
        except OSError:
            continue
    return None


def test_8_sigkill_of_a_joblib_worker_fails_only_its_point(tmp_path):
    sweep = tmp_path / "s"
    cmd = sweep_cmd("kv.seq_len=200,201,202,203", "kv.d_model=16", "kv.n_heads=2", "kv.strategies=[recompute]",
                    "bench.threads=1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, deadline = [], time.monotonic() + 240
    while len(killed) < 2 and proc.poll() is None and time.monotonic() < deadline:  # it dies each time it runs
        folders = list(sweep.glob("kv.seq_len=201*"))
        victim = _process_writing_into(folders[0], proc.pid) if folders else None
        if victim is not None and victim not in killed:
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
        time.sleep(0.01)
    _, err = proc.communicate(timeout=300)
    assert len(killed) == 2, f"the point was not run again after its worker died: {killed}\n{err}"
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert "1 of 4 point(s) failed or did not run" in err
    assert "#1 kv.seq_len=201" in err and "it did not finish when run again on its own: the launcher failed" in err
    complete = {json.loads(p.read_text())["overrides"].split()[0] for p in sweep.glob("*/point.json")}
    # 200 was stopped with the pool and ran again; 202 and 203 had not started
    assert complete == {"kv.seq_len=200", "kv.seq_len=202", "kv.seq_len=203"}, err


# 9. a sweep folder that cannot be made: one line --------------------------------------------------------
@pytest.mark.parametrize("folder", ["/etc/passwd/x", "/proc/no/such/x"])
def test_9_an_unusable_sweep_folder_is_one_line(folder):
    proc = run_app("-m", "kv.seq_len=3", f"hydra.sweep.dir={folder}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"cannot create the sweep folder {folder}" in proc.stderr


# 10. unknown keys are refused, + or not ------------------------------------------------------------------
@pytest.mark.parametrize("overrides,message", [
    (["+kv.seqlen=10"], "kv.seqlen is not a knob: did you mean kv.seq_len?"),
    (["+qmethod=q4_k", "kv.seq_len=3"], "quant.* holds the knobs of experiment=quantization, but this point runs "
                                         "experiment=kv_cache"),
])
def test_10_unknown_keys_are_refused(tmp_path, overrides, message):
    proc = run_app(*overrides, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr


# 11. absolute interpolations -------------------------------------------------------------------------------
def test_11_absolute_interpolations_work_in_a_run_and_a_sweep(tmp_path):
    args = ["kv.prompt_len=${kv.seq_len}", "kv.seq_len=4", "kv.d_model=8", "kv.n_heads=2", *FAST_BENCH]
    assert run_app(*args, f"hydra.run.dir={tmp_path / 'r'}").returncode == 0
    assert {r["kv.prompt_len"] for r in rows(tmp_path / "r")} == {"4"}
    assert run_app("-m", *args, f"hydra.sweep.dir={tmp_path / 's'}").returncode == 0
    assert {r["kv.prompt_len"] for job in job_dirs(tmp_path / "s") for r in rows(job)} == {"4"}


# 12. the project's own paths resolve against where the command started ------------------------------------
def test_12_chdir_and_reruns_keep_the_projects_paths(tmp_path):
    machine = ["bench.threads=1", *FAST_BENCH]
    assert run_app("experiment=machine", "machine.gemm_sizes=[64]", "machine.stream_mib=4",
                   f"hydra.run.dir={tmp_path / 'm'}", *machine, cwd=tmp_path).returncode == 0
    assert (tmp_path / "outputs" / "machine.json").exists()
    proc = run_app("-m", "experiment=matmul", "mmcase=square_256", "hydra.job.chdir=true",
                   f"hydra.sweep.dir={tmp_path / 's'}", *machine, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (job,) = job_dirs(tmp_path / "s")
    assert not (job / "outputs").exists(), "the job re-measured the machine into its own folder"
    rerun = run_app("--config-dir", str(job / ".hydra"), "--config-name", "config", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert len(list((tmp_path / "outputs" / "runs").glob("*/results.csv"))) == 1


# 13. the experiment is inferred from its groups too ------------------------------------------------------
@pytest.mark.parametrize("overrides,experiment", [
    (["qmethod=q4_k"], "quantization"),
    (["mmcase=qkv_decode"], "matmul"),
    (["+qmethod=q4_k"], "quantization"),
    (["-cn", "infer_sweep", "quant.format=q8_0"], "quantization"),
    (["--config-name=infer_sweep", "mmcase=square_256"], "matmul"),
])
def test_13_the_experiment_is_inferred_from_groups_and_with_config_name(overrides, experiment):
    proc = run_app(*overrides, "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    assert f"experiment: {experiment}" in proc.stdout


# 14. duplicates and out-of-range values --------------------------------------------------------------------
def test_14_a_point_listed_twice_runs_once(tmp_path):
    proc = run_app("-m", "kv.seq_len=3,3", *TINY_KV, f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0 and "1 point(s) listed more than once: each runs once" in proc.stdout
    assert len(job_dirs(tmp_path)) == 1 and "all 1 point(s) ok" in proc.stdout


@pytest.mark.parametrize("overrides,message", [
    (["experiment=quantization", "quant.group_size=0"], "quant.group_size=0 must be >= 1"),
    (["bench.threads=1000"], f"bench.threads=1000 must be between 1 and {len(os.sched_getaffinity(0))}"),
])
def test_14_out_of_range_values_are_refused(tmp_path, overrides, message):
    proc = run_app(*overrides, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 1 and message in proc.stderr


# 15. job numbers stay the points' own after a resume -------------------------------------------------------
def test_15_job_numbers_are_unique_after_a_resume(tmp_path):
    args = ["-m", "kv.seq_len=3,4,5,6", *TINY_KV, f"hydra.sweep.dir={tmp_path}"]
    assert run_app(*args).returncode == 0
    for folder in job_dirs(tmp_path)[::2]:  # two points left incomplete
        (folder / "point.json").unlink()
    again = run_app(*args)
    assert again.returncode == 0 and "(2 already complete)" in again.stdout
    check_complete(tmp_path, 4, 3)  # every point keeps its own job number


# 16. a speedup comes from paired rounds, with its spread ----------------------------------------------------
def test_16_speedups_are_medians_of_paired_rounds_with_their_quartiles(tmp_path):
    import numpy as np

    proc = run_app("kv.seq_len=30", "kv.d_model=16", "kv.n_heads=2", "bench.repeats=9", "bench.min_sample_s=0.002",
                   f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    by = {r["variant"]: r for r in rows(tmp_path)}
    samples = list(csv.DictReader(open(tmp_path / "samples.csv")))
    per_round = {v: np.array([float(s["time_s"]) for s in samples if s["variant"] == v]) for v in by}
    for v in ("concat", "prealloc"):
        ratios = per_round["recompute"] / per_round[v]
        q1, med, q3 = np.percentile(ratios, [25, 50, 75])
        r = by[v]
        assert float(r["speedup_vs_recompute"]) == pytest.approx(med, rel=1e-12)
        assert (float(r["speedup_q1"]), float(r["speedup_q3"])) == pytest.approx((q1, q3), rel=1e-12)
        assert r["speedup_unstable"] == str(bool(q3 - q1 > 0.1 * med))
    assert " vs recompute" in proc.stdout and "(" in proc.stdout.split(" vs recompute")[0].rsplit("x", 1)[1]
