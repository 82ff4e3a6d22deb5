"""The timing harness: statistics, calibration, budget; no assertion on how fast anything is."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from infer_core.decoder.decode import generate
from infer_core.decoder.model import DecoderShape, init_decoder
from infer_core.measure.timing import TimeBudgetExceeded, Timing, measure, measure_interleaved, paired_ratios


def test_statistics_of_known_samples():
    # 5 samples of 2 calls each: per call 1, 2, 3, 4, 10 ms
    t = Timing(sample_ns=(2_000_000, 4_000_000, 6_000_000, 8_000_000, 20_000_000),
               cpu_sample_ns=(2_000_000,) * 5, inner_loops=2, warmup=1)
    s = t.stats()
    assert s["time_median_s"] == pytest.approx(0.003)
    assert s["time_q1_s"] == pytest.approx(0.002) and s["time_q3_s"] == pytest.approx(0.004)
    assert s["time_iqr_s"] == pytest.approx(0.002)
    assert s["time_min_s"] == pytest.approx(0.001) and s["time_max_s"] == pytest.approx(0.010)
    assert s["time_mean_s"] == pytest.approx(0.004)
    assert s["time_std_s"] == pytest.approx(np.std([1, 2, 3, 4, 10], ddof=1) / 1000)
    assert s["time_cv"] == pytest.approx(s["time_std_s"] / 0.004)
    assert s["cpu_time_median_s"] == pytest.approx(0.001)
    assert s["unstable"] is True  # CV ~ 0.9


def test_unstable_flags():
    steady = Timing((5_000_000,) * 5, (5_000_000,) * 5, 1, 1)
    assert steady.cv == 0 and not steady.unstable
    short = Timing((500_000,) * 5, (500_000,) * 5, 1, 1)  # 0.5 ms raw samples
    assert short.unstable


def test_calibration_repeats_short_calls_inside_a_sample():
    calls = []
    t = measure(lambda: calls.append(1), warmup=2, repeats=5, min_sample_s=0.002)
    assert t.n == 5 and t.warmup == 2
    assert t.inner_loops[0] > 1 and len(set(t.inner_loops)) == 1
    assert len(calls) == 2 + 5 * t.inner_loops[0]
    assert min(t.sample_ns) > 0


def test_sleep_is_measured_not_undercounted():
    t = measure(lambda: time.sleep(0.002), repeats=5, min_sample_s=0.001)
    assert t.inner_loops == (1,) * t.n
    assert t.median >= 0.002  # a clock can overshoot a sleep, never undershoot it


def test_budget_is_predicted_before_sampling():
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.05)

    with pytest.raises(TimeBudgetExceeded, match=r"would take 0\.3.* s of 0\.1 s"):
        measure(slow, warmup=1, repeats=5, max_seconds=0.1)
    assert len(calls) == 1  # only the warm-up ran


def test_generate_stops_at_its_deadline():
    shape = DecoderShape(8, 2)
    rng = np.random.default_rng(0)
    model = init_decoder(shape, rng)
    x = rng.standard_normal((1, 20, 8), dtype=np.float32)
    with pytest.raises(TimeBudgetExceeded, match="recompute passed its time budget at token 1 of 20"):
        generate(model, x, 0, "recompute", deadline=time.perf_counter() - 1)


def test_measure_rejects_bad_arguments():
    with pytest.raises(ValueError, match="warmup=0"):
        measure(lambda: None, warmup=0)
    assert math.isinf(Timing((0,) * 5, (0,) * 5, 1, 1).cv)


def test_interleaved_rounds_take_one_sample_of_each_in_rotating_order():
    log = []
    fns = {name: (lambda name=name: (log.append(name), time.sleep(0.001))) for name in "abc"}
    t = measure_interleaved(fns, warmup=1, repeats=4, min_sample_s=0.0)
    assert sorted(t) == ["a", "b", "c"] and all(x.n == 4 and x.inner_loops == (1,) * 4 for x in t.values())
    sampled = log[3:]  # after one warm-up call of each
    assert sampled == list("abc" "bca" "cab" "abc")


def test_interleaved_calibrates_each_function_on_its_own():
    counts = {"fast": 0, "slow": 0}

    def fast():
        counts["fast"] += 1

    def slow():
        counts["slow"] += 1
        time.sleep(0.003)

    t = measure_interleaved({"fast": fast, "slow": slow}, warmup=1, repeats=3, min_sample_s=0.002)
    assert set(t["slow"].inner_loops) == {1} and min(t["fast"].inner_loops) > 1
    assert counts == {"fast": 1 + sum(t["fast"].inner_loops), "slow": 1 + 3}


def test_paired_ratios_are_taken_round_by_round():
    a = Timing((2_000, 9_000, 4_000), (0,) * 3, 1, 1)
    b = Timing((1_000, 3_000, 4_000), (0,) * 3, 1, 1)
    assert paired_ratios(a, b).tolist() == [2.0, 3.0, 1.0]
    with pytest.raises(ValueError, match="3 vs 2"):
        paired_ratios(a, Timing((1, 1), (0, 0), 1, 1))
