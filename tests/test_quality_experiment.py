"""experiment=quality on the real SmolLM2-135M and CPython's pydoc text: KV-cache types against the f16 cache,
with the statistics llama-perplexity prints, by depth; bad text is one line."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from experiments.quality.measure import read_text
from experiments.shared.packaged import ModelFetchError, packaged_file
from tests.conftest import run_app, run_report

SMALL = ["experiment=quality", "quality.n_ctx=128", "quality.n_tokens=256", "quality.buckets=[0,32]"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    try:
        packaged_file("smollm2-135m-instruct")
    except ModelFetchError as exc:
        pytest.skip(f"SmolLM2-135M can be neither fetched nor found: {exc}")
    root = tmp_path_factory.mktemp("quality")
    proc = run_app("-m", *SMALL, "quality.type_k=f16,q4_0", "quality.flash_attn=true", f"hydra.sweep.dir={root}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root


def test_a_quantized_k_cache_loses_more_than_the_f16_one(sweep):
    rows = pd.concat([pd.read_csv(p) for p in sweep.rglob("results.csv")]).set_index("quality.type_k")
    f16, q4 = rows.loc["f16"], rows.loc["q4_0"]
    assert (rows["chunks"] == 2).all() and (rows["scored_tokens"] == 2 * 63).all()  # 256 // 128, 63 scored each
    assert (rows["text_sha256"] == hashlib.sha256(read_text("pydoc").encode()).hexdigest()).all()
    assert 3 < f16["ppl_base"] < 100 and f16["ppl_base"] == pytest.approx(q4["ppl_base"])  # one base, real text
    assert q4["mean_kld"] > 3 * f16["mean_kld"] and q4["same_top"] < f16["same_top"]
    assert 0 <= f16["mean_kld"] < 0.01 and abs(f16["ppl_ratio"] - 1) < 0.02
    depth = pd.read_csv(next(p for p in sweep.rglob("depth.csv") if "q4_0" in str(p)))
    assert list(depth["first_position"]) == [0, 32] and list(depth["tokens"]) == [2 * 32, 2 * 95]


def test_the_report_prints_the_statistics_and_the_depth_figure(sweep):
    proc = run_report(str(sweep))
    assert proc.returncode == 0, proc.stderr[-1500:]
    md = (sweep / "report" / "report.md").read_text()
    assert "### As llama-perplexity prints it" in md and "quality_depth.png" in md and "deeper in the context" in md


@pytest.mark.parametrize(("text", "says"), [("", "the file is empty"), ("just a few words", "shorter than one chunk")])
def test_bad_text_is_one_line(tmp_path, text, says):
    try:
        packaged_file("smollm2-135m-instruct")
    except ModelFetchError as exc:
        pytest.skip(f"SmolLM2-135M can be neither fetched nor found: {exc}")
    path = tmp_path / "text.txt"
    path.write_text(text)
    proc = run_app(*SMALL, f"quality.text={path}", f"hydra.run.dir={tmp_path / 'r'}")
    assert proc.returncode == 1 and says in proc.stderr and "Traceback" not in proc.stderr
