"""report.py compare on real sweeps: with themselves, with an injected regression, with a point missing, and
across BLAS thread counts (the statistics themselves: tests/test_verdicts.py)."""

from __future__ import annotations

import shutil

import html5lib
import numpy as np
import pandas as pd
import pytest

from experiments.report import main as report_main
from experiments.reporting.stats import INCONCLUSIVE, NO_CHANGE, SLOWER, VERDICTS
from tests.conftest import FAST_BENCH, run_app, small_machine_file

SMALL = ["experiment=matmul", "matmul.size=96,128,160", "matmul.weights=[fp32]", *FAST_BENCH]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    machine = f"bench.machine_file={small_machine_file(root / 'machine.json')}"
    one = run_app("-m", *SMALL, machine, "bench.threads=1", f"hydra.sweep.dir={root / 'one'}")
    two = run_app("-m", *SMALL, machine, "bench.threads=2", f"hydra.sweep.dir={root / 'two'}")
    assert one.returncode == 0 and two.returncode == 0, (one.stderr[-1500:], two.stderr[-1500:])
    return root


def compare(capsys, *args) -> tuple[int, str]:
    """``report.py compare ARGS`` in this process (the command's own code, without an interpreter start):
    its exit code and what it printed on stderr."""
    code = report_main(["compare", *map(str, args)])
    return code, capsys.readouterr().err


def test_a_sweep_against_itself_changes_nothing_and_passes_the_gate(sweeps, capsys):
    code, err = compare(capsys, sweeps / "one", sweeps / "one", "--labels", "a,b", "--fail-above", "10%", "--out",
                        sweeps / "self")
    assert code == 0, err
    text = (sweeps / "self" / "compare.md").read_text()
    assert "The environments are the same." in text and "3 timed comparisons: 0 faster, 0 slower, " in text
    assert "Exact figures: all equal." in text and "## Regressions past 10%\n\nNone." in text
    table = pd.read_csv(sweeps / "self" / "compare.csv")
    assert (table["ratio"] == 1).all() and (sweeps / "self" / "compare_ratios.png").exists()
    # one pass per point: the interval rests on the canary's readings, symmetric about 1; whether it fits within
    # ±10% depends on how much the machine moved between them
    assert set(table["verdict"]) <= {NO_CHANGE, INCONCLUSIVE} and set(table["basis"]) == {"canary"}
    assert np.allclose(table["ratio_low"] * table["ratio_high"], 1)
    assert "## The machine during each sweep" in text and "![The machine during each sweep](canary_over_time.png)" \
        in text and (sweeps / "self" / "canary_over_time.png").exists()
    page = (sweeps / "self" / "compare.html").read_text()
    html5lib.HTMLParser(strict=True).parse(page)  # raises on any parse error
    assert page.count('src="data:image/png;base64,') == 2 and "<table>" in page and "http" not in page  # ratios, canary


def test_an_injected_regression_fails_the_gate_and_a_missing_point_is_listed(sweeps, capsys):
    """One point's samples replaced in both sweeps by seeded synthetic ones in three passes, 50% slower in the
    second (real samples of a tiny matmul spread too much on a busy machine to carry a verdict test)."""
    base, slow = sweeps / "base", sweeps / "slow"
    shutil.copytree(sweeps / "one", base)
    shutil.copytree(sweeps / "one", slow)
    rng = np.random.default_rng(7)
    for sweep, scale in ((base, 1.0), (slow, 1.5)):
        job = sorted(p for p in sweep.iterdir() if (p / "samples.csv").exists())[0]
        one = pd.read_csv(job / "samples.csv")
        samples = pd.concat([one.assign(**{"pass": p}) for p in (1, 2, 3)], ignore_index=True)
        samples["sample"] = np.arange(len(samples))
        samples["time_s"] = scale * rng.normal(1e-3, 3e-5, len(samples))  # CV 3%
        samples.to_csv(job / "samples.csv", index=False)
    shutil.rmtree(sorted(p for p in slow.iterdir() if (p / "samples.csv").exists())[-1])  # and one point gone
    for canary in [*base.glob("*/canary.csv"), *slow.glob("*/canary.csv")]:  # the machine itself did not move
        readings = pd.read_csv(canary)
        readings[["copy_gbps", "sgemm_gflops"]] = [10.0, 100.0]
        readings.to_csv(canary, index=False)
    code, err = compare(capsys, base, slow, "--fail-above", "10%", "--out", sweeps / "gate")
    assert code == 2
    assert "slower: matmul" in err and "1 point(s) slower by more than 10%" in err
    ratio = float(err.split("slower: matmul")[1].split(": x")[1].split()[0])
    assert 1.4 < ratio < 1.6
    text = (sweeps / "gate" / "compare.md").read_text()
    assert "## Points in one sweep only" in text and "| base |" in text  # the point only the first sweep has
    # the other point has one pass a side and nothing to stand in for its passes' variance: inconclusive
    code, err = compare(capsys, base, slow, "--fail-on-inconclusive", "--out", sweeps / "unsure")
    assert code == 2 and "1 point(s) inconclusive at 10%: their interval crosses the threshold" in err
    assert "slower: matmul" not in err  # without --fail-above, a slower point alone does not fail


def test_threads_one_against_two_lead_with_the_difference(sweeps, capsys):
    code, err = compare(capsys, sweeps / "one", sweeps / "two", "--labels", "1 thread,2 threads", "--out",
                        sweeps / "threads")
    assert code == 0, err
    text = (sweeps / "threads" / "compare.md").read_text()
    differ = text.split("## What differs between the sweeps")[1].split("## Summary")[0]
    assert "| blas_threads | 1 | 2 |" in differ and "| bench.threads | 1 | 2 |" in differ
    assert text.index("What differs") < text.index("## matmul")
    table = pd.read_csv(sweeps / "threads" / "compare.csv")
    assert len(table) == 3 and set(table["verdict"]) <= set(VERDICTS)


def test_served_requests_are_compared_on_their_own_latencies():
    """A batching or serve point has no per-call samples: its requests (``requests.csv``) are its samples, in
    seconds, failed requests left out and TPOT only over requests of more than one token."""
    from pathlib import Path

    from experiments.registry import EXPERIMENTS
    from experiments.reporting.compare import compare
    from experiments.reporting.sweeps import Sweep, point_samples

    rng = np.random.default_rng(3)

    def sweep(label: str, ttft_scale: float) -> Sweep:
        n = 40
        requests = pd.DataFrame({
            "source": f"/{label}/0", "variant": "continuous, measured",
            "ttft_ms": (100 * ttft_scale * rng.lognormal(0, 0.05, n)).astype(str),
            "e2e_ms": (900 * rng.lognormal(0, 0.05, n)).astype(str),
            "output_tokens": ["1"] + ["8"] * (n - 1)})
        rows = pd.DataFrame({"experiment": ["batching"], "status": ["ok"], "variant": ["continuous, measured"],
                             "source": [f"/{label}/0"], "seed": [0]})
        return Sweep(label, Path(label), rows, pd.DataFrame(), [], requests)

    a, b = sweep("a", 1.0), sweep("b", 1.5)
    got = point_samples(a)[("/a/0", "continuous, measured")]
    assert sorted(got) == ["E2E per request", "TTFT per request"]
    assert np.array_equal(got["TTFT per request"].times, a.requests["ttft_ms"].astype(float).to_numpy() / 1e3)
    assert got["TTFT per request"].passes is None  # requests of one run: compared on their samples
    a.requests["tpot_ms"] = "12.5"
    a.requests.loc[5, "error"] = "timeout"
    a.requests["error"] = a.requests["error"].fillna("")
    got = point_samples(a)[("/a/0", "continuous, measured")]
    assert len(got["TTFT per request"].times) == 39 and len(got["TPOT per request"].times) == 38  # a failed, a 1-token
    a.requests = a.requests.drop(columns=["tpot_ms", "error"])
    timed = compare([a, b], EXPERIMENTS, 0.10).timed.set_index("measure")
    assert timed.loc["TTFT per request", "verdict"] == SLOWER and 1.4 < timed.loc["TTFT per request", "ratio"] < 1.6
    assert timed.loc["E2E per request", "verdict"] == NO_CHANGE and set(timed["basis"]) == {"samples"}


def test_points_are_listed_in_the_order_of_their_numbers():
    from experiments.reporting.compare import natural

    points = ["prealloc · kv.seq_len=100", "concat · kv.seq_len=20", "prealloc · kv.seq_len=20",
              "concat · kv.seq_len=5", "concat · kv.seq_len=2.5"]
    assert sorted(points, key=natural) == ["concat · kv.seq_len=2.5", "concat · kv.seq_len=5",
                                           "concat · kv.seq_len=20", "prealloc · kv.seq_len=20",
                                           "prealloc · kv.seq_len=100"]


def test_normalized_samples_are_times_on_a_machine_as_fast_as_the_reference():
    """--normalize: each timed sample times the canary's reading before its pass, over the first sweep's median; a
    point without a reading for its pass keeps its time."""
    from pathlib import Path

    from experiments.reporting.drift import series
    from experiments.reporting.sweeps import Sweep, point_samples

    samples = pd.DataFrame({"source": ["/s/0"] * 4 + ["/s/1"] * 2, "variant": ["v"] * 6, "measure": ["m"] * 6,
                            "pass": [1, 1, 2, 2, 1, 1], "time_s": [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]})
    canary = series(pd.DataFrame({"source": ["/s/0", "/s/0"], "experiment": ["matmul"] * 2, "pass": ["1", "2"],
                                  "at_utc": ["2026-12-06T00:00:00+00:00", "2026-12-06T00:01:00+00:00"],
                                  "copy_gbps": ["10", "5"], "sgemm_gflops": ["100", "100"]}))
    sweep = Sweep("s", Path("s"), pd.DataFrame(), samples, canary=canary)
    got = point_samples(sweep, "copy_gbps", speed=10.0)
    assert list(got[("/s/0", "v")]["m"].times) == [1.0, 1.0, 1.0, 1.0]  # pass 2 ran at half the copy speed
    assert list(got[("/s/1", "v")]["m"].times) == [3.0, 3.0]  # no reading: as measured
    assert list(point_samples(sweep)[("/s/0", "v")]["m"].times) == [1.0, 1.0, 2.0, 2.0]


def test_two_settings_of_one_sweep_compare_pass_by_pass(tmp_path, capsys):
    """--between: one sweep's float32 and float64 points (and its two seeds) compared side by side, each pair's pass
    differences the interval's basis; the exact figures that differ are the ones the dtype doubles."""
    machine = f"bench.machine_file={small_machine_file(tmp_path / 'machine.json', threads=(1,))}"
    sweep = tmp_path / "ab"
    proc = run_app("-m", "experiment=matmul", "matmul.size=64", "matmul.weights=[fp32]", "matmul.dtype=float32,float64",
                   "seed=0,1", "bench.threads=1", "sweep.rounds=2", machine, *FAST_BENCH, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    code, err = compare(capsys, sweep, "--between", "matmul.dtype", "--out", tmp_path / "dtype")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "dtype" / "compare.csv")
    assert list(table["point"]) == ["fp32 · seed=0", "fp32 · seed=1"] and set(table["basis"]) == {"pairs"}
    assert (table["passes_a"] == 2).all() and (table["passes_b"] == 2).all()
    span = pd.concat(pd.read_csv(p) for p in sweep.glob("*/canary.csv"))["at_utc"].pipe(pd.to_datetime)
    assert ((table["gap_s"] > 0) & (table["gap_s"] < (span.max() - span.min()).total_seconds())).all()
    text = (tmp_path / "dtype" / "compare.md").read_text()
    assert "# Comparison: matmul.dtype=float32 vs matmul.dtype=float64" in text and "measured side by side" in text
    assert "| matmul.dtype | float32 | float64 |" in text and "| seed |" not in text.split("## Summary")[0]
    assert "| fp32 · seed=0 | matmul.dtype=float64 | weight_bytes | 16384 | 32768 |" in text  # 64·64 elements
    code, err = compare(capsys, sweep, "--between", "seed=1,0", "--out", tmp_path / "seed")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "seed" / "compare.csv")
    assert list(table["point"]) == ["fp32 · matmul.dtype=float32", "fp32 · matmul.dtype=float64"]
    exact = (tmp_path / "seed" / "compare.md").read_text().split("Exact figures:")[1]
    assert set(table["sweep"]) == {"seed=0"} and "max_rel_err_vs_ref" in exact and "bytes" not in exact  # the inputs
    code, err = compare(capsys, sweep, "--between", "matmul.dtype=float16,float32")
    assert code == 1 and err.strip().splitlines() == [
        f"error: --between matmul.dtype: float16 not among its values in {sweep} (float32, float64); name two or "
        "more, as --between matmul.dtype=A,B"]
    with pytest.raises(SystemExit) as exit_:
        compare(capsys, sweep, sweep, "--between", "seed")
    assert exit_.value.code == 2 and "give one folder (2 given)" in capsys.readouterr().err


def test_pairs_that_were_not_neighbours_in_the_sweep_are_named():
    """--between's pairs should run back to back; a median gap past 1.5 steps of the sweep (one pass's start to the
    next one's) is named, with the remedy."""
    from experiments.reporting.compare import Comparison
    from experiments.reporting.compare_report import basis_note
    from experiments.reporting.drift import series

    at = pd.date_range("2026-12-06", periods=8, freq="2s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.000+00:00")
    canary = series(pd.DataFrame({"source": list("abcdabcd"), "experiment": "matmul", "pass": [1] * 4 + [2] * 4,
                                  "at_utc": at, "copy_gbps": 10.0, "sgemm_gflops": 100.0}))
    assert canary["source"].tolist() == list("abcdabcd")

    def note(gap: float) -> str:
        return basis_note(Comparison(["k=1", "k=2"], pd.DataFrame(), pd.DataFrame(), {}, pd.DataFrame(
            {"gap_s": [gap, gap]}), pd.DataFrame(), 0, pd.DataFrame(), canary={"k": canary}, paired=True))

    assert "ran a median 2.0 s apart" in note(2.0) and "not neighbours" not in note(2.0)
    assert "not neighbours:** one pass to the next took 2.0 s among these points, a pair 6.0 s" in note(6.0)


def test_a_sweep_splits_by_a_knob_as_the_command_line_writes_its_values():
    """A column of numbers with gaps reads back as floats (1024.0): --between matmul.size=1024 still names it."""
    from pathlib import Path

    from experiments.reporting.sweeps import Sweep, split

    rows = pd.DataFrame({"experiment": "matmul", "status": "ok", "variant": "fp32", "source": ["/s/0", "/s/1", "/s/2"],
                         "matmul.size": [1024.0, 2048.0, np.nan]})
    samples = pd.DataFrame({"source": ["/s/0", "/s/1", "/s/2"], "time_s": [1.0, 2.0, 3.0]})
    parts = split(Sweep("s", Path("s"), rows, samples), "matmul.size", ["1024", "2048"])
    assert [p.label for p in parts] == ["matmul.size=1024", "matmul.size=2048"]
    assert [list(p.rows["source"]) for p in parts] == [["/s/0"], ["/s/1"]]
    assert [list(p.samples["time_s"]) for p in parts] == [[1.0], [2.0]]
    assert [p.label for p in split(Sweep("s", Path("s"), rows, samples), "matmul.size")] == [
        "matmul.size=1024", "matmul.size=2048"]  # every value, in the sweep's order; the point without one is left
