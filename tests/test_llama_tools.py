"""llama.cpp's own tools (``make tools``, which ``make test`` runs first): the build's cache and its refusals,
llama-server as the embedded server under load with its own metrics beside ours, and llama-bench as an engine."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from experiments.shared import llama_tools, tools_build
from experiments.shared.llama_build import EngineBuildError
from tests.conftest import run_app, run_report

LOAD = ["serve.n_requests=200", "serve.warmup_requests=2", "serve.prompt_len=16", "serve.output_len=8",
        "serve.n_ctx=64"]


def rows(folder) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p) for p in sorted(folder.rglob("results.csv"))], ignore_index=True)


def fake_tools(cache, amx: bool) -> None:
    """A tools folder as a build leaves it, with a llama-server that does (or does not) carry the AMX kernels."""
    folder = cache / "tools" / f"llama.cpp-{llama_tools.engine_version()}"
    (folder / "bin").mkdir(parents=True)
    for name in llama_tools.TOOLS:
        (folder / "bin" / name).write_bytes(b"\x7fELF" + (llama_tools.AMX_SYMBOL if amx else b"ggml_backend_cpu\x00"))
    (folder / "build.json").write_text(json.dumps({"version": llama_tools.engine_version()}))


def test_a_missing_tool_is_refused_in_one_line_naming_the_command_that_builds_it(tmp_path, monkeypatch):
    monkeypatch.setenv("INFER_SWEEP_CACHE", str(tmp_path))
    with pytest.raises(llama_tools.ToolsMissing, match=r"^llama-bench is not built: run `make tools` \(builds"):
        llama_tools.tool("llama-bench")
    assert not llama_tools.available()


def test_a_tool_built_with_amx_kernels_is_refused_on_a_cpu_with_amx(tmp_path, monkeypatch):
    monkeypatch.setenv("INFER_SWEEP_CACHE", str(tmp_path))
    fake_tools(tmp_path, amx=True)
    monkeypatch.setattr(llama_tools, "cpu_flags", lambda: {"avx512f", "amx_int8", "amx_tile"})
    with pytest.raises(EngineBuildError, match=r"llama-server was built with llama.cpp's AMX kernels, which crash on "
                                               r"this CPU \(it has AMX\): remove .+ and run `make tools`"):
        llama_tools.tool("llama-server")
    monkeypatch.setattr(llama_tools, "cpu_flags", lambda: {"avx512f"})  # no AMX on the CPU: the kernels never run
    assert llama_tools.tool("llama-server").is_file()


def test_the_tools_are_built_once_without_amx_kernels_and_found_again_without_a_rebuild():
    record = llama_tools.built()
    assert record is not None, "the llama.cpp tools are not built: `make test` runs `make tools` first"
    folder = llama_tools.tools_dir()
    assert tools_build.build() == folder  # found: nothing rebuilt
    assert llama_tools.built() == record and not list(folder.parent.glob(".building-*"))
    assert record["amx_kernels"] is False and "-DLLAMA_USE_PREBUILT_UI=OFF" in record["cmake_options"]
    for name in llama_tools.TOOLS:
        assert not llama_tools.has_amx_kernels(llama_tools.tool(name))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tmp_path_factory.mktemp("tools_models")


@pytest.fixture(scope="module")
def slots_sweep(tmp_path_factory, models):
    sweep = tmp_path_factory.mktemp("slots") / "sweep"
    proc = run_app("-m", "experiment=serve", "serve.server=llama_server", "serve.parallel=4",
                   "serve.concurrency=1,4,16", *LOAD, "serve.threads=1", f"serve.models_dir={models}",
                   f"hydra.sweep.dir={sweep}", timeout=600)
    return sweep, proc


def test_llama_server_answers_every_request_at_concurrency_1_4_and_16(slots_sweep):
    """200 streamed requests per level against llama-server with 4 slots: none lost (the client once lost a third
    of them: llama-server closes each connection after a streamed answer), and the server's own counts agree with
    the client's."""
    sweep, proc = slots_sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = rows(sweep).sort_values("level_concurrency")
    assert list(df["status"]) == ["ok"] * 3 and list(df["level_concurrency"]) == [1, 4, 16]
    assert (df["completed"] == 200).all() and (df["failed"] == 0).all()
    assert (df["server_kind"] == "llama-server").all() and (df["server_parallel"] == 4).all()
    assert df["server_version"].str.match(r"llama-server b\d+-[0-9a-f]+").all()
    assert (df["server_header"] == "llama.cpp").all()
    # the server generated exactly what the client received, request by request and in total
    assert (df["total_output_tokens"] == 200 * 8).all() and (df["server_predicted_tokens"] == 200 * 8).all()
    assert (df["token_count_disagreements"] == 0).all()
    # four slots at most (sampled every 0.25 s), every decode with a busy slot, and one at a time at concurrency 1
    assert (df["server_max_processing"] <= 4).all() and (df["server_busy_slots_per_decode"] >= 1).all()
    assert df["server_busy_slots_per_decode"].iloc[0] == 1.0
    assert (df["server_context_high_water"] <= 64).all()
    # the layers under the server on the same file and threads (in process, llama-bench, llama-batched-bench at batch
    # 1 and 4), side by side in the report
    for layer in ("engine_tg", "llama_bench_tg", "tg_b1", "tg", "pp"):
        assert (df[f"reference_{layer}_tokens_per_s"] > 0).all(), \
            (layer, [x for x in (proc.stdout + proc.stderr).splitlines() if "reference under the server" in x])
    report = run_report(str(sweep))
    assert report.returncode == 0, report.stderr[-2000:]
    text = (sweep / "report" / "report.md").read_text()
    assert "#### Reconciling the layers" in text and "batched-bench tg, B=slots" in text
    assert "@ embedded llama-server, 4 slots (openai_completions)" in text


def test_a_request_longer_than_a_slots_context_is_refused_before_the_load(tmp_path, models):
    proc = run_app("experiment=serve", "serve.parallel=2", "serve.n_ctx=16", "serve.prompt_len=16",
                   "serve.output_len=8", f"serve.models_dir={models}", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert ("a request of 24 tokens (serve.prompt_len + serve.output_len, as drawn) exceeds the context of a slot "
            "of the embedded server (16 tokens, serve.n_ctx)") in proc.stderr + proc.stdout


def test_llama_bench_as_an_engine_gives_the_engines_rows_from_its_own_repetitions(tmp_path):
    proc = run_app("experiment=engine", "engine.backend=llama_bench", "engine.n_prompt=32", "engine.n_gen=8",
                   "engine.n_check=16", "bench.repeats=5", "engine.threads=1", f"engine.models_dir={tmp_path}",
                   f"hydra.run.dir={tmp_path / 'run'}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = rows(tmp_path / "run").set_index("variant")
    assert list(df.index) == ["pp32", "tg8"] and (df["status"] == "ok").all()
    assert (df["n_samples"] == 5).all() and (df["tokens_per_s"] > 0).all()  # llama-bench's five repetitions
    assert df["engine_version"].str.match(r"llama-bench b\d+ \([0-9a-f]+\)").all()
    assert (df["n_threads"] == 1).all()
    # the logits are checked through the same llama.cpp: a q8_0 file agrees with the NumPy reference
    assert (df["top1_agree_vs_ref"] == 1.0).all() and (df["max_rel_diff_vs_ref"] < 1e-2).all()


def test_without_the_tools_the_embedded_server_falls_back_saying_so_in_one_line(tmp_path, monkeypatch, models):
    monkeypatch.setenv("INFER_SWEEP_CACHE", str(tmp_path / "no-tools"))
    proc = run_app("experiment=serve", "serve.n_requests=4", "serve.output_len=4", f"serve.models_dir={models}",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = [line for line in (proc.stdout + proc.stderr).splitlines() if "falls back" in line]
    assert len(said) == 1 and "llama-server is not built: run `make tools`" in said[0], said
    row = rows(tmp_path / "run").iloc[0]
    assert row["server_kind"] == "llama-cpp-python" and row["completed"] == 4
    slots = run_app("experiment=serve", "serve.parallel=2", f"serve.models_dir={models}",
                    f"hydra.run.dir={tmp_path / 'slots'}")
    assert slots.returncode == 1 and "Traceback" not in slots.stderr
    assert "serve.parallel=2 needs llama-server: llama-server is not built: run `make tools`" in slots.stderr
