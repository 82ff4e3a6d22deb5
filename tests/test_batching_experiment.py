"""experiment=batching and experiment=kv_memory end to end: rows, per-request sidecars, the cost model beside
the measurement, a tight budget that preempts, the report's figures, and bad knobs refused naming the key."""

from __future__ import annotations

import html5lib
import numpy as np
import pandas as pd
import pytest

from tests.conftest import run_app, run_report

SMALL = ["batch.d_model=64", "batch.n_heads=4", "batch.n_kv_heads=2", "batch.d_ffn=96", "batch.n_requests=12",
         "batch.output_len=10", "batch.max_len=64", "batch.calibration_requests=8", "batch.check_requests=12"]


def rows(folder) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p) for p in sorted(folder.rglob("results.csv"))], ignore_index=True)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    batching = run_app("-m", "experiment=batching", "batch.policy=static,continuous", "batch.cost=measured,model",
                       *SMALL, f"hydra.sweep.dir={root / 'batching'}")
    tight = run_app("experiment=batching", "batch.preempt=swap", "batch.swap_blocks=8", "batch.num_blocks=12",
                    "batch.block_size=8", *SMALL, f"hydra.run.dir={root / 'tight'}")
    memory = run_app("-m", "experiment=kv_memory", "mem.dataset=sharegpt,alpaca", "mem.n_requests=60",
                     "mem.block_sizes=[1,16]", "mem.samples=[2,4]", "mem.sharing_requests=20",
                     f"hydra.sweep.dir={root / 'memory'}")
    return root, (batching, tight, memory)


def test_batching_rows_compare_policies_and_the_cost_model_on_one_trace(sweeps):
    root, procs = sweeps
    assert all(p.returncode == 0 for p in procs), [p.stderr[-2000:] for p in procs]
    df = rows(root / "batching").set_index(["batch.policy", "batch.cost"])
    assert (df["status"] == "ok").all() and len(df) == 4
    for policy in ("static", "continuous"):
        measured, model = df.loc[(policy, "measured")], df.loc[(policy, "model")]
        assert measured["max_rel_err"] < 1e-5 and pd.isna(model["max_rel_err"])
        # a least-squares fit on a few noisy iterations: its intercept may come out on either side of 0
        assert model["calibration_iterations"] > 0 and np.isfinite(model["cost_intercept_us"])
        assert measured["output_throughput"] > 0 and model["output_throughput"] > 0
    requests = pd.read_csv(next((root / "batching").rglob("requests.csv")))
    assert sorted(requests["request"]) == list(range(12)) and (requests["ttft_ms"] <= requests["e2e_ms"]).all()
    assert (requests["send_ms"] == 0).all()
    assert (requests["token_ms"].str.split().map(len) == requests["output_tokens"]).all()  # every token's time


def test_a_tight_budget_preempts_swaps_and_still_serves_every_request(sweeps):
    root, _ = sweeps
    row = rows(root / "tight").iloc[0]
    assert row["status"] == "ok" and row["preemptions"] > 0 and row["swaps"] > 0 and row["peak_blocks"] <= 12
    assert row["max_rel_err"] < 1e-5  # every output of every request, against one causal pass
    assert len(pd.read_csv(root / "tight" / "requests.csv")) == 12


def test_kv_memory_rows_and_the_report_of_both_experiments(sweeps):
    root, _ = sweeps
    df = rows(root / "memory")
    share = df[df["mem.dataset"] == "sharegpt"].set_index("variant")
    assert list(share.index) == ["max_length", "pow2", "oracle", "paged/1", "paged/16", "sharing n=2", "sharing n=4"]
    assert share.loc["paged/1", "utilization_pct"] == 100.0 and share.loc["paged/1", "internal_frag_pct"] == 0.0
    assert share.loc["max_length", "utilization_pct"] < share.loc["oracle", "utilization_pct"] < 100
    assert 0 < share.loc["sharing n=2", "sharing_saved_pct"] < share.loc["sharing n=4", "sharing_saved_pct"]
    proc = run_report(str(root))
    assert proc.returncode == 0, proc.stderr
    text = (root / "report" / "report.md").read_text()
    for png in ("kv_memory_policies.png", "kv_memory_sharing.png", "batching_throughput_latency.png",
                "batching_model_vs_measured.png"):
        assert png in text and (root / "report" / png).exists()
    assert "Continuous against static batching" in text and "Cost model against measurement" in text
    page = (root / "report" / "report.html").read_text()  # the same report as one page, plots inside
    html5lib.HTMLParser(strict=True).parse(page)
    assert page.count('src="data:image/png;base64,') == text.count("](") and "<table>" in page


@pytest.mark.parametrize(("override", "message"), [
    ("experiment=batching batch.num_blocks=3", "batch.num_blocks=3 must be >= 64: one sequence of batch.max_len=1024"),
    ("experiment=batching batch.n_heads=5", "batch: d_model=1024 must be divisible by n_heads=5"),
    ("experiment=kv_memory mem.budget_gib=0.5", "mem.budget_gib=0.5 holds 1024 tokens of llama-2-7b, fewer than "
                                                "mem.max_len=2048"),
    ("experiment=kv_memory mem.dataset=custom", "mem.dataset=custom needs mem.prompt_len and mem.output_len"),
])
def test_bad_knobs_are_refused_naming_the_key(tmp_path, override, message):
    proc = run_app(*override.split(), f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0 and message in proc.stderr + proc.stdout and "Traceback" not in proc.stderr


def test_serve_and_batching_write_one_request_schema(sweeps, tmp_path):
    """The shared columns of requests.csv, in order, in both experiments (serve against a scripted server)."""
    from experiments.framework.store import SIDECAR_IDENTITY
    from experiments.serve.scripted import spawn
    from experiments.shared.requests import COLUMNS

    root, _ = sweeps
    with spawn("--ttft-ms", "5") as (url, _):
        served = run_app("experiment=serve", f"serve.url={url}", "serve.n_requests=4", f"hydra.run.dir={tmp_path}")
    assert served.returncode == 0, served.stderr[-1500:]
    shared = [c.name for c in COLUMNS]
    own = [c for c in pd.read_csv(tmp_path / "requests.csv").columns if c not in SIDECAR_IDENTITY]
    serve = list(own)
    batching = [c for c in pd.read_csv(next((root / "batching").rglob("requests.csv"))).columns
                if c not in SIDECAR_IDENTITY]
    assert serve[:len(shared)] == shared == batching[:len(shared)]


def test_burstiness_shapes_the_arrivals(tmp_path):
    arrivals = {}
    for b in ("0.2", "5"):
        proc = run_app("experiment=batching", "batch.rate=8", f"batch.burstiness={b}", *SMALL,
                       f"hydra.run.dir={tmp_path / b}")
        assert proc.returncode == 0, proc.stderr[-1500:]
        arrivals[b] = pd.read_csv(tmp_path / b / "requests.csv").sort_values("request")["arrival_s"].to_numpy()
    gaps = {b: np.diff(a) for b, a in arrivals.items()}
    assert not np.allclose(arrivals["0.2"], arrivals["5"])
    assert gaps["0.2"].std() > 2 * gaps["5"].std()  # bursty arrivals cluster, regular ones are evenly spaced
