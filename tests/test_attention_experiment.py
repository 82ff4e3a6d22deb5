"""experiment=attention end to end: rows with exact traffic, measured peak memory, the error against a
float64 dense pass; the over-budget refusal; the report's figures."""

from __future__ import annotations

import pandas as pd
import pytest

from infer_core.decoder.attention import decode_traffic, flash_traffic, naive_traffic
from tests.conftest import FAST_BENCH, run_app, run_report

SMALL = ["attn.d_head=16", "attn.n_heads=4", "attn.n_kv_heads=2", "attn.check_rows=64"]


def rows(folder) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p) for p in sorted(folder.rglob("results.csv"))], ignore_index=True)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("attention")
    grid = run_app("-m", "experiment=attention", "attn.impl=naive,flash", "attn.seq_len=100,300", *SMALL,
                   "attn.block_q=32", "attn.block_k=48", f"hydra.sweep.dir={root / 'grid'}", *FAST_BENCH)
    blocks = run_app("-m", "experiment=attention", "attn.block_q=16,64", "attn.block_k=16,64", "attn.seq_len=300",
                     *SMALL, f"hydra.sweep.dir={root / 'blocks'}", *FAST_BENCH)
    decode = run_app("-m", "experiment=attention", "attn.phase=decode", "attn.impl=naive,flash", "attn.seq_len=500",
                     "attn.n_splits=7", *SMALL, f"hydra.sweep.dir={root / 'decode'}", *FAST_BENCH)
    return root, (grid, blocks, decode)


def test_rows_hold_exact_traffic_measured_memory_and_a_small_error(sweep):
    root, procs = sweep
    assert all(p.returncode == 0 for p in procs), [p.stderr[-2000:] for p in procs]
    df = rows(root / "grid").set_index(["attn.impl", "attn.seq_len"])
    for n in (100, 300):
        naive, flash = df.loc[("naive", n)], df.loc[("flash", n)]
        assert (naive["traffic_reads"], naive["traffic_writes"]) == naive_traffic(4, n, n, 16)
        assert (flash["traffic_reads"], flash["traffic_writes"]) == flash_traffic(4, n, n, 16, 32, causal=True)
        assert naive["largest_intermediate_bytes"] == 4 * n * n * 4  # the scores of every head, float32
        assert flash["largest_intermediate_bytes"] == 4 * 32 * 48 * 4  # one score block of every head
        assert naive["rel_err"] < 1e-5 and flash["rel_err"] < 1e-5
        assert flash["fast_memory_elements"] == 2 * 32 * 16 + 2 * 48 * 16 + 32 * 48
    assert df.loc[("naive", 300), "peak_bytes"] > 2 * df.loc[("flash", 300), "peak_bytes"]
    assert df.loc[("naive", 300), "peak_bytes"] >= 4 * 300 * 300 * 4  # tracemalloc saw the scores
    dec = rows(root / "decode").set_index("attn.impl")
    assert (dec.loc["flash", "traffic_reads"], dec.loc["flash", "traffic_writes"]) == decode_traffic(4, 500, 16, 7)
    assert (dec.loc["naive", "traffic_reads"], dec.loc["naive", "traffic_writes"]) == naive_traffic(4, 1, 500, 16)
    assert (dec["rel_err"] < 1e-5).all()


def test_report_draws_memory_time_blocks_and_traffic(sweep):
    root, _ = sweep
    proc = run_report(str(root))
    assert proc.returncode == 0, proc.stderr
    text = (root / "report" / "report.md").read_text()
    for png in ("attention_scaling.png", "attention_blocks.png", "attention_traffic.png"):
        assert png in text and (root / "report" / png).exists()
    assert "Flash against the dense form" in text


def test_a_dense_point_over_the_budget_is_refused_with_its_estimate(tmp_path):
    proc = run_app("experiment=attention", "attn.impl=naive", "attn.seq_len=20000", "attn.max_gib=1",
                   f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    error = rows(tmp_path).iloc[0]["error"]
    need = (20000 * 20000 * 4 + 20000 * 20000 + 20000 * 128 * 4) / 2**30  # scores, causal mask, output
    assert error == (f"attn.impl=naive at attn.seq_len=20000 needs about {need:.2f} GiB (its N×N scores), over "
                     "attn.max_gib=1: refused before allocating")


@pytest.mark.parametrize(("override", "message"), [
    ("attn.n_heads=3 attn.n_kv_heads=2", "attn.n_heads=3 must be divisible by attn.n_kv_heads=2"),
    ("attn.phase=decode attn.seq_len=4 attn.n_splits=5", "attn.n_splits=5 must be <= attn.seq_len=4"),
    ("attn.block_q=0", "attn.block_q=0 must be >= 1"),
])
def test_bad_knobs_are_refused_naming_the_key(tmp_path, override, message):
    proc = run_app("experiment=attention", *override.split(), f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0 and message in proc.stderr + proc.stdout
