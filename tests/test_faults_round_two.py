"""Faults, round two: one regression test per class (the numbers are issue 24's items). Each failed on e23a805."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.serve.scripted import spawn
from tests.conftest import FAST_BENCH, ROOT, job_dirs, run_app, run_report
from tests.faults import TINY_KV, small_disk, sweep_cmd

KEY = "sk-test-5e3cr3t-0123456789"


def rows(path: Path) -> list[dict]:
    return list(csv.DictReader(open(path, newline="")))


def every_text(*folders: Path) -> str:
    return "".join(p.read_text(errors="replace") for f in folders for p in f.rglob("*") if p.is_file()
                   and p.suffix in (".csv", ".json", ".log", ".md", ".html", ".yaml"))


# 1. the report and compare read a point only through its manifest ----------------------------------------------
def test_1_rows_without_a_complete_ok_manifest_are_never_ok_in_the_report_or_compare(tmp_path):
    sweep = tmp_path / "s"
    assert run_app(*sweep_cmd("kv.seq_len=3,4,5,6", *TINY_KV, f"hydra.sweep.dir={sweep}")[2:]).returncode == 0
    killed, partial, failed, good = job_dirs(sweep)
    (killed / "point.json").unlink()  # a rerun cleared it, then was SIGKILLed: the old results.csv stays
    (partial / "samples.csv").unlink()  # the manifest lists a file that is gone
    manifest = json.loads((failed / "point.json").read_text())
    (failed / "point.json").write_text(json.dumps({**manifest, "status": "failed", "errors": ["boom"]}))
    proc = run_report(str(sweep), "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    table = {Path(r["source"]).name: r for r in rows(tmp_path / "r" / "results.csv")}
    assert {table[f.name]["status"] for f in (killed, partial, failed)} == {"incomplete"}
    assert table[good.name]["status"] == "ok"
    assert "no manifest (point.json)" in table[killed.name]["error"]
    assert "lists samples.csv, which is missing" in table[partial.name]["error"]
    assert "the point's manifest says failed: boom" in table[failed.name]["error"]
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Status: incomplete 9, ok 3" in md and "### Incomplete points" in md
    # compare: the same rule, and the files it cannot read are listed
    (killed / "results.csv").write_bytes(b"\x00\xff\x00binary")
    proc = run_report("compare", str(sweep), str(sweep), "--out", str(tmp_path / "c"))
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "c" / "compare.md").read_text()
    assert "## Left out (not compared)" in text and "not UTF-8 text" in text and "lists samples.csv" in text
    assert "left out:" in proc.stderr
    assert len(rows(tmp_path / "c" / "compare.csv")) == 3  # the one complete point, each of its 3 strategies


def test_1_a_full_disk_point_is_not_counted_ok_by_the_report(tmp_path):
    disk = tmp_path / "disk"
    with small_disk(disk, "30k") as real:
        if not real:
            pytest.skip("cannot mount a tmpfs here (not root): the manifest cases above cover the rule")
        proc = run_app(*sweep_cmd("kv.seq_len=10", *TINY_KV, f"hydra.sweep.dir={disk / 's'}")[2:])
        assert proc.returncode == 1
        report = run_report(str(disk / "s"), "--out", str(tmp_path / "r"))
    if report.returncode == 0:  # whatever rows reached the disk, none may be ok
        assert "ok" not in {r["status"] for r in rows(tmp_path / "r" / "results.csv")}
    else:
        assert "no results.csv this report can read" in report.stderr


# 2. the API key never reaches a file or the console ------------------------------------------------------------
def test_2_an_echoed_api_key_is_redacted_everywhere(tmp_path, monkeypatch):
    """A server that quotes the refused key back (as OpenAI's API does) in every other answer, and in its answer to
    the model list when the key is wrong: the key appears nowhere, in files, the log or the console."""
    monkeypatch.setenv("SERVER_KEY", KEY)
    env = {**os.environ, "MY_KEY": KEY}
    with spawn("--api-key-env", "SERVER_KEY", "--fault", "http401", "--fault-every", "2") as (url, _):
        proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "run.py"), "-m", "experiment=serve",
                               f"serve.url={url}", "serve.api_key_env=MY_KEY", "serve.n_requests=6",
                               "serve.model_name=scripted", f"hydra.sweep.dir={tmp_path / 's'}"],
                              cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
        wrong = subprocess.run([sys.executable, str(ROOT / "experiments" / "run.py"), "experiment=serve",
                                f"serve.url={url}", "serve.api_key_env=MY_KEY", "serve.n_requests=2",
                                f"hydra.run.dir={tmp_path / 'w'}"], cwd=ROOT, capture_output=True, text=True,
                               env={**env, "MY_KEY": KEY + "-wrong"}, timeout=120)
    assert proc.returncode == 1 and "Incorrect API key provided: Bearer ***" in proc.stderr
    assert wrong.returncode == 1 and "/v1/models answered HTTP 401" in wrong.stderr
    report = run_report(str(tmp_path / "s"), "--out", str(tmp_path / "r"))
    assert report.returncode == 0, report.stderr
    texts = every_text(tmp_path)
    assert "Bearer ***" in texts and KEY not in texts + proc.stdout + proc.stderr + wrong.stdout + wrong.stderr


# 3. names that become paths stay inside their folder -----------------------------------------------------------
@pytest.mark.parametrize("override", ["sweep.name=../../../x", "sweep.name=..", "sweep.name=", "sweep.name=a/b"])
def test_3_a_sweep_name_that_leaves_outputs_sweeps_is_refused(tmp_path, override):
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    proc = run_app("-m", "kv.seq_len=3", *TINY_KV, override, cwd=work)
    assert proc.returncode == 1 and "sweep.name=" in proc.stderr and "must be a plain name" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == [Path("a"), Path("a/b"), Path("a/b/c")]


def test_3_a_model_name_that_leaves_the_models_folder_is_refused(tmp_path):
    shape = "{arch:llama,d_model:32,n_layers:1,n_heads:2,n_kv_heads:2,d_ffn:64,n_vocab:300}"
    models = tmp_path / "a" / "b" / "models"
    proc = run_app("experiment=engine", "engine.model=../../x", f"++engine.shape={shape}",
                   f"engine.models_dir={models}", f"hydra.run.dir={tmp_path / 'r'}")
    assert proc.returncode == 1 and "engine.model='../../x' must be a plain name" in proc.stderr
    assert not list((tmp_path / "a").rglob("*.gguf")) and not list((tmp_path / "a").rglob("*.npy"))


# 4. two single runs never share a folder -----------------------------------------------------------------------
def test_4_two_single_runs_started_together_keep_their_own_folders(tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "run.py"), *TINY_KV]
    lengths = ["10", "11", "12", "13"]  # four at once: some start within the same second
    procs = [subprocess.Popen([*cmd, f"kv.seq_len={n}"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for n in lengths]
    assert [p.wait(120) for p in procs] == [0] * 4
    runs = sorted((tmp_path / "outputs" / "runs").iterdir())
    assert len(runs) == 4 and all((r / "point.json").exists() for r in runs)
    assert sorted(rows(r / "results.csv")[0]["kv.seq_len"] for r in runs) == lengths


# 5. a native crash fails one point: in test_fault_injection.py; here the AMX build is refused ------------------
def test_5_a_build_with_amx_kernels_is_refused_on_a_cpu_with_amx_and_names_the_fix():
    from experiments.shared.llama_build import amx_problem

    info = "CPU : SSE3 = 1 | AVX512 = 1 | AMX_INT8 = 1 | OPENMP = 1 |"
    problem = amx_problem(info, {"avx512f", "amx_int8", "amx_tile"}, "0.3.36")
    assert problem is not None and "crash on this CPU" in problem
    assert 'CMAKE_ARGS="-DCMAKE_C_FLAGS=-mno-amx-int8' in problem and "llama-cpp-python==0.3.36" in problem
    assert amx_problem(info, {"avx512f"}, "0.3.36") is None  # no AMX on the CPU: the kernels never run
    assert amx_problem(info.replace("AMX_INT8 = 1 | ", ""), {"amx_int8"}, "0.3.36") is None


# 6. a full disk before the first write is one line, and leaves no lock ------------------------------------------
def test_6_a_full_disk_before_the_first_write_is_one_line_and_leaves_no_lock(tmp_path):
    disk = tmp_path / "disk"
    with small_disk(disk, "8k") as real:
        if not real:
            pytest.skip("cannot mount a tmpfs here (not root)")
        _fill(disk)
        sweep = run_app(*sweep_cmd("kv.seq_len=3", *TINY_KV, f"hydra.sweep.dir={disk / 's'}")[2:])
        single = run_app("kv.seq_len=3", *TINY_KV, f"hydra.run.dir={disk / 'r'}")
        assert not (disk / "s" / ".sweep.lock").exists()
    for proc, says in ((sweep, "could not write the sweep's files in"), (single, "could not write the run's files in")):
        assert proc.returncode == 1 and says in proc.stderr and "No space left on device" in proc.stderr
        assert "Traceback" not in proc.stderr


def _fill(disk: Path) -> None:
    """Fill the file system at ``disk`` to the last byte."""
    try:
        with open(disk / "fill", "wb") as fh:
            while True:
                fh.write(b"\0" * 1024)
                fh.flush()
    except OSError:
        pass


# 7. a user's JSON file is never rewritten ---------------------------------------------------------------------
def test_7_a_json_file_of_someone_else_is_refused_and_kept(tmp_path):
    bookmarks = tmp_path / "bookmarks.json"
    text = json.dumps({"entries": [{"title": "a", "url": "b"}], "owner": "me", "version": 3})
    bookmarks.write_text(text)
    proc = run_app("experiment=matmul", "mmcase=square_256", f"bench.machine_file={bookmarks}",
                   f"hydra.run.dir={tmp_path / 'r'}", *FAST_BENCH)
    assert proc.returncode == 1 and "is JSON but not a machine reference written by infer-sweep" in proc.stderr
    assert bookmarks.read_text() == text


# 8. input errors say the rule ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "says"), [
    (["-m", "kv.seq_lenn=10,20"], "kv.seq_lenn is not a knob: did you mean kv.seq_len?"),
    (["-m", "kv.seq_len=10,abc"], "kv.seq_len=abc is not an integer"),
    (["kv.seq_len=${kv.nope}"], "kv.seq_len: Interpolation key 'kv.nope' not found"),
    (["kv.seq_len=${kv.seq_len}"], "kv.seq_len: Recursive interpolation detected"),
    (["kv.seq_len=${oc.env:INFER_SWEEP_UNSET_VARIABLE}"], "INFER_SWEEP_UNSET_VARIABLE"),
])
def test_8_input_errors_name_the_key_and_the_rule_in_one_line(tmp_path, args, says):
    proc = run_app(*args, *TINY_KV, f"hydra.sweep.dir={tmp_path / 's'}", f"hydra.run.dir={tmp_path / 'r'}")
    assert proc.returncode == 1 and says in proc.stderr, proc.stderr[-800:]
    assert "Traceback" not in proc.stderr and "use +kv" not in proc.stderr


def test_8_an_openai_base_url_is_accepted_and_a_refused_model_list_names_its_status(tmp_path):
    with spawn() as (url, _):
        ok = run_app("experiment=serve", f"serve.url={url}/v1", "serve.n_requests=2", f"hydra.run.dir={tmp_path / 'a'}")
    assert ok.returncode == 0, ok.stderr[-800:]
    assert rows(tmp_path / "a" / "results.csv")[0]["server_url"] == url
    with spawn("--api-key-env", "HOME") as (url, _):  # a key is required and none is sent
        refused = run_app("experiment=serve", f"serve.url={url}", "serve.n_requests=2",
                          f"hydra.run.dir={tmp_path / 'b'}")
    assert refused.returncode == 1 and "/v1/models answered HTTP 401 Unauthorized" in refused.stderr
    assert "lists no model" not in refused.stderr


# 9. compare never crashes ----------------------------------------------------------------------------------------
def test_9_compare_says_what_cannot_be_compared_and_refuses_bad_paths_in_one_line(tmp_path):
    good, bad, other = tmp_path / "good", tmp_path / "bad", tmp_path / "other"
    assert run_app(*sweep_cmd("kv.seq_len=3", *TINY_KV, f"hydra.sweep.dir={good}")[2:]).returncode == 0
    run_app(*sweep_cmd("kv.seq_len=0", *TINY_KV, "sweep.skip_invalid=true", f"hydra.sweep.dir={bad}")[2:])
    assert run_app(*sweep_cmd("experiment=quantization", "qmethod=q8_0", "quant.rows=8", "quant.cols=64", *FAST_BENCH,
                              f"hydra.sweep.dir={other}")[2:]).returncode == 0
    for a, b in ((good, bad), (good, other)):
        proc = run_report("compare", str(a), str(b), "--out", str(tmp_path / "c"))
        assert proc.returncode == 1 and "nothing to compare" in proc.stderr, proc.stderr[-800:]
        assert "Traceback" not in proc.stderr and "no complete (ok) point in" in proc.stderr
    afile = tmp_path / "afile"
    afile.write_text("x")
    proc = run_report("compare", str(good), str(good), "--out", str(afile))
    assert proc.returncode == 1 and "--out" in proc.stderr and "is a file" in proc.stderr
    assert "Traceback" not in proc.stderr
    binary = tmp_path / "machine.bin"
    binary.write_bytes(b"\x00\xff\xfe\x00")
    proc = run_report(str(good), "--machine", str(binary), "--out", str(tmp_path / "r"))
    assert proc.returncode == 1 and "--machine" in proc.stderr and "Traceback" not in proc.stderr


def test_9_a_serve_sweep_whose_points_all_failed_is_reported(tmp_path):
    with spawn() as (url, _):
        pass  # the server is gone: every point fails to connect
    sweep = run_app("-m", "experiment=serve", f"serve.url={url}", "serve.concurrency=1,2", "serve.n_requests=2",
                    f"hydra.sweep.dir={tmp_path / 's'}")
    assert sweep.returncode == 1
    report = run_report(str(tmp_path / "s"), "--out", str(tmp_path / "r"))
    assert report.returncode == 0 and "Traceback" not in report.stderr, report.stderr[-1500:]
    assert "### Failed points" in (tmp_path / "r" / "report.md").read_text()


# 10. each point once ---------------------------------------------------------------------------------------------
def test_10_a_sweep_named_twice_and_a_value_written_twice_count_once(tmp_path):
    sweep = tmp_path / "s"
    proc = run_app(*sweep_cmd("kv.seq_len=3,03,4", *TINY_KV, f"hydra.sweep.dir={sweep}")[2:])
    assert proc.returncode == 0 and "is the same point as" in proc.stdout + proc.stderr
    assert len(job_dirs(sweep)) == 2
    report = run_report(str(sweep), str(sweep.resolve()), "--out", str(tmp_path / "r"))
    assert report.returncode == 0
    assert len(rows(tmp_path / "r" / "results.csv")) == 6  # 2 points × 3 strategies, once each


# 11. "ok" means something was measured -------------------------------------------------------------------------
def test_11_a_point_with_every_variant_skipped_is_not_complete(tmp_path):
    args = sweep_cmd("kv.seq_len=40", *TINY_KV, "bench.max_seconds=0.0001", f"hydra.sweep.dir={tmp_path / 's'}")[2:]
    first = run_app(*args)
    assert first.returncode == 1 and "nothing measured" in first.stderr and "all 1 point(s) ok" not in first.stdout
    (job,) = job_dirs(tmp_path / "s")
    assert json.loads((job / "point.json").read_text())["status"] == "failed"
    time.sleep(0.01)
    again = run_app(*args)
    assert "already complete" not in again.stdout + again.stderr and again.returncode == 1
