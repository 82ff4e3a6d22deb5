"""The serve experiment end to end: the embedded servers (llama.cpp's llama-server and llama-cpp-python's, real
processes started and reaped per point), servers by URL (the scripted server, a real process on loopback), faults,
secrets, the report."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from experiments.serve.scripted import spawn
from experiments.serve.server import free_port
from tests.conftest import ROOT, run_app, run_report

QUICK = ["serve.n_requests=6", "serve.warmup_requests=1", "serve.prompt_len=24", "serve.output_len=12"]


def rows(folder) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p) for p in sorted(folder.rglob("results.csv"))], ignore_index=True)


def servers(models) -> list[str]:
    """Embedded servers still running on a model under ``models`` (their command line names it): llama-cpp-python's
    (``--model``) or llama-server (``-m``)."""
    found = subprocess.run(["pgrep", "-f", f"(llama_cpp\\.server.*--model|llama-server -m) {models}"],
                           capture_output=True, text=True)
    return found.stdout.split()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tmp_path_factory.mktemp("serve_models")


@pytest.fixture(scope="module")
def concurrency_sweep(tmp_path_factory, models):
    sweep = tmp_path_factory.mktemp("serve") / "sweep"
    proc = run_app("-m", "experiment=serve", "serve.server=llama_cpp_python", "serve.concurrency=1,2,4,8", *QUICK,
                   f"serve.models_dir={models}", f"hydra.sweep.dir={sweep}")
    return sweep, proc


def test_embedded_server_concurrency_sweep_runs_and_leaves_no_server(concurrency_sweep, models):
    sweep, proc = concurrency_sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert servers(models) == []
    df = rows(sweep).sort_values("level_concurrency")
    assert list(df["status"]) == ["ok"] * 4 and list(df["variant"]) == [f"concurrency {c}" for c in (1, 2, 4, 8)]
    assert (df["completed"] == 6).all() and (df["failed"] == 0).all()
    # every answer ran to max_tokens, one visible token per chunk, and the prompt counts are exact
    assert (df["short_outputs"] == 0).all() and (df["total_output_tokens"] == 6 * 12).all()
    assert (df["total_input_tokens"] == 6 * 24).all() and (df["probe_prompt_tokens"] == 24).all()
    assert (df["probe_prompt_tokens_known"] == 24).all()
    assert list(df["max_in_flight"]) == [1, 2, 4, 6]  # 6 requests: at most 6 in flight at concurrency 8
    assert df["server_version"].str.startswith("llama-cpp-python ").all() and (df["server_header"] == "uvicorn").all()
    # one request at a time on the server: at concurrency 8, the last first token comes after the others ended
    # (an order, which a busy machine cannot change, where a ratio of medians moved with the load)
    level8 = pd.read_csv(next(p for p in sweep.rglob("requests.csv") if "concurrency=8" in str(p)))
    assert (level8["end_ms"] < level8["first_token_ms"].max()).sum() >= 4
    requests = pd.read_csv(next(sweep.rglob("requests.csv")))
    assert len(requests) == 6 and (requests["output_tokens"] == 12).all()
    assert requests["token_ms"].map(lambda s: len(s.split())).eq(12).all()  # every token's arrival
    # one clock: each offset from the arrival; the latencies from the send, as vLLM's
    assert (requests["first_token_ms"] - requests["send_ms"] - requests["ttft_ms"]).abs().max() < 1e-6
    assert (requests["end_ms"] - requests["send_ms"] - requests["e2e_ms"]).abs().max() < 1e-6
    report = run_report(str(sweep))
    assert report.returncode == 0, report.stderr
    text = (sweep / "report" / "report.md").read_text()
    assert "serve_latency_throughput.png" in text and "serve_ttft.png" in text and "#### Knee" in text


def test_a_server_that_runs_one_request_at_a_time_is_called_out():
    """The knee section's note, on rows as a one-at-a-time server gives them (4x in flight, 1.1x the throughput,
    TTFT 5x): its conditions are the measurement's, so they are checked here on fixed rows, not on a live server
    whose figures a busy machine moves."""
    from experiments.serve.figures import sections

    df = pd.DataFrame({"status": "ok", "variant": ["concurrency 1", "concurrency 2", "concurrency 4"],
                       "output_throughput": [100.0, 105.0, 110.0], "mean_in_flight": [1.0, 2.0, 4.0],
                       "median_ttft_ms": [20.0, 45.0, 100.0], "p99_ttft_ms": [25.0, 50.0, 120.0],
                       "p99_tpot_ms": [5.0, 5.0, 5.0], "server_model": "m", "server_url": "http://127.0.0.1:1",
                       "serve.url": [float("nan")] * 3, "serve.api": "openai_completions"})
    text = sections(df)
    assert "the requests queue" in text and "m @ embedded (openai_completions)" in text
    assert "the requests queue" not in sections(df.assign(output_throughput=[100.0, 190.0, 370.0]))


@pytest.mark.parametrize("server", ["llama_server", "llama_cpp_python"])
def test_a_killed_server_fails_its_point_in_one_line_and_the_next_point_starts_a_new_one(tmp_path, models, server):
    """SIGSEGV to the embedded server mid-load: the requests in flight and queued fail and are counted, the
    point fails with one line naming the crash, the next point runs on a new server."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "experiments" / "run.py"), "-m", "experiment=serve", f"serve.server={server}",
           "serve.parallel=2" if server == "llama_server" else "serve.parallel=1", "serve.concurrency=2",
           "serve.n_requests=8", "serve.warmup_requests=1", "serve.prompt_len=16", "serve.threads=1",
           # long answers keep the first point busy past the kill (llama-server decodes two at once: longer still);
           # the next point's answers are short
           "serve.output_len=1500,8" if server == "llama_server" else "serve.output_len=400,8",
           f"serve.models_dir={models}", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = _first_server(models, proc)
    time.sleep(2.0)  # started, probed, warm, loaded
    os.kill(int(pid), signal.SIGSEGV)  # as a native crash of llama.cpp ends it
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, err[-2000:]
    df = rows(sweep).set_index("serve.output_len")
    killed, next_point = df.loc[df.index.max()], df.loc[8]
    assert killed["status"] == "failed" and next_point["status"] == "ok", (killed["error"], next_point["error"])
    assert re.fullmatch(r"the embedded server crashed: signal 11 \(SIGSEGV\) during the load: \d of 8 requests "
                        r"failed, the first with: .+", killed["error"]), killed["error"]
    assert killed["completed"] + killed["failed"] == 8 and killed["failed"] >= 1
    assert next_point["completed"] == 8
    assert "Traceback" not in out + err and servers(models) == []


def _first_server(models, proc: subprocess.Popen) -> str:
    for _ in range(600):
        if found := servers(models):
            return found[0]
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    raise AssertionError("no embedded server started")


@pytest.mark.parametrize(("sig", "server"), [(signal.SIGINT, "llama_server"), (signal.SIGKILL, "llama_server"),
                                             (signal.SIGKILL, "llama_cpp_python")])
def test_no_orphan_server_on_ctrl_c_or_when_the_job_is_killed(tmp_path, models, sig, server):
    cmd = [sys.executable, str(ROOT / "experiments" / "run.py"), "experiment=serve", f"serve.server={server}",
           "serve.n_requests=50",
           "serve.output_len=500", f"serve.models_dir={models}", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _first_server(models, proc)
    time.sleep(1.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    for _ in range(100):  # SIGKILL: the kernel signals the server when its parent dies
        if not servers(models):
            break
        time.sleep(0.05)
    assert servers(models) == []
    if sig == signal.SIGINT:
        assert proc.returncode != 0 and "KeyboardInterrupt" not in err, err[-2000:]


@pytest.mark.parametrize(("fault", "every", "extra", "message"), [
    ("malformed", 3, [], "malformed chunk"),
    ("stall", 3, ["serve.timeout_s=1"], "timed out after serve.timeout_s=1 s"),
    ("http429", 3, [], "HTTP 429 Too Many Requests"),
    ("http500", 2, [], "HTTP 500 Internal Server Error"),
    ("cut", 3, [], r"the server closed the connection before the answer ended \(\d+ chunks received\)"),
])
def test_faults_are_counted_as_failed_requests_with_one_line(tmp_path, fault, every, extra, message):
    with spawn("--itl-ms", "1", "--fault", fault, "--fault-every", str(every)) as (url, _):
        proc = run_app("experiment=serve", f"serve.url={url}", "serve.concurrency=3", "serve.n_requests=12",
                       "serve.warmup_requests=0", *extra, f"hydra.run.dir={tmp_path}", timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    row = rows(tmp_path).iloc[0]
    assert row["status"] == "failed" and row["completed"] + row["failed"] == 12
    # the server numbers requests from 1, the probe first: the fault hits those whose number divides by every
    assert row["failed"] == sum(n % every == 0 for n in range(2, 14))
    assert re.fullmatch(rf"\d+ of 12 requests failed, the first with: {message}.*", row["error"])
    requests = pd.read_csv(tmp_path / "requests.csv")
    assert requests["error"].notna().sum() == row["failed"]


def test_a_url_that_refuses_connections_fails_at_once_in_one_line(tmp_path):
    port = free_port()
    started = time.perf_counter()
    proc = run_app("experiment=serve", f"serve.url=http://127.0.0.1:{port}", f"hydra.run.dir={tmp_path}")
    assert time.perf_counter() - started < 30
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    error = rows(tmp_path).iloc[0]["error"]
    assert error.startswith(f"cannot connect to http://127.0.0.1:{port} (serve.url): "), error


def test_the_api_key_comes_from_the_environment_and_is_written_nowhere(tmp_path, monkeypatch):
    secret = "sk-test-" + os.urandom(8).hex()
    monkeypatch.setenv("SERVE_TEST_KEY", secret)  # the scripted server and the job both see it
    with spawn("--api-key-env", "SERVE_TEST_KEY") as (url, _):
        ok = run_app("experiment=serve", f"serve.url={url}", "serve.api_key_env=SERVE_TEST_KEY", "serve.n_requests=4",
                     f"hydra.run.dir={tmp_path / 'ok'}")
        unset = run_app("experiment=serve", f"serve.url={url}", "serve.api_key_env=SERVE_NO_SUCH_KEY",
                        f"hydra.run.dir={tmp_path / 'unset'}")
        without = run_app("experiment=serve", f"serve.url={url}", f"hydra.run.dir={tmp_path / 'without'}")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert rows(tmp_path / "ok").iloc[0]["completed"] == 4
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path
    assert secret not in ok.stdout + ok.stderr
    assert unset.returncode == without.returncode == 1
    assert rows(tmp_path / "unset").iloc[0]["error"] == ("serve.api_key_env=SERVE_NO_SUCH_KEY: that environment "
                                                          "variable is not set")
    assert "/v1/models answered HTTP 401" in rows(tmp_path / "without").iloc[0]["error"]  # the first request refused


@pytest.mark.parametrize(("override", "message"), [
    ("serve.api=ollama_generate", "serve.api=ollama_generate needs serve.url"),
    ("serve.concurrency=0", "serve.concurrency=0 must be >= 1"),
    ("serve.server=llama_cpp_python serve.parallel=4", "serve.parallel=4 needs serve.server=llama_server"),
    ("serve.parallel=0", "serve.parallel=0 must be"),
    ("serve.rate=-2", "serve.rate=-2.0 must be > 0"),
    ("serve.url=localhost:8000", "serve.url='localhost:8000' must start with http:// or https://"),
    ("serve.model=huge", "serve.model='huge' is not a known model"),
    ("serve.lengths=uniform serve.spread=1.5", "serve.spread=1.5 must be >= 0 (and < 1 for uniform lengths)"),
])
def test_bad_knobs_are_refused_naming_the_key(tmp_path, override, message):
    proc = run_app("experiment=serve", *override.split(), f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0 and message in proc.stderr + proc.stdout, proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr
