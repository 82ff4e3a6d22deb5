"""The verdicts, checked on seeded synthetic sweeps drawn from this machine's drift (the model fitted by
benchmarks/calibrate_drift.py, committed in tests/fixtures/drift_model.json): no test here times anything."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments.reporting.drift import widen
from experiments.reporting.stats import (
    FASTER,
    INCONCLUSIVE,
    NO_CHANGE,
    SLOWER,
    compare_paired,
    compare_passes,
    compare_samples,
    pass_values,
    prior_variance,
    trigamma_inverse,
    verdict,
)
from infer_core.measure.drift import DriftModel, fit_drift

FIXTURE = Path(__file__).parent / "fixtures" / "drift_model.json"
#: The demo's shape: its timed lines, the passes (sweep.rounds of its presets) and samples per pass, how long a
#: pass of one point takes [s] (conf/sweep/demo_*.yaml), and the time between the two sweeps compared [s].
LINES, ROUNDS, REPEATS, PASS_S, GAP_S = 60, 3, 5, 0.9, 60.0
#: A sample's own noise (log): the median spread of the samples within one pass of the demo's points was 3.5% to
#: 12% by experiment on this machine; the canary's readings carry their own, fitted noise.
SAMPLE_SD = 0.08
THRESHOLD, TRIALS = 0.10, 1000


def machine() -> DriftModel:
    """The worse (larger level spread) of the two canary series' models of this machine."""
    models = json.loads(FIXTURE.read_text())["models"]
    worst = max(models.values(), key=lambda m: m["level_sd"])
    return DriftModel(worst["level_sd"], worst["stretch_s"], worst["noise_sd"])


def comparison(model: DriftModel, rng: np.random.Generator, slowdown: np.ndarray) -> list[str]:
    """Two synthetic sweeps, one after the other on one timeline of the machine's drift, and their verdicts.

    In each, pass r of line j starts at ((r − 1)·LINES + j)·PASS_S seconds, led by a canary reading (the drift's
    level plus a reading's noise), then REPEATS samples spread over the pass: log time = the line's own
    + log(slowdown, in B) − k·level + a sample's noise, each line following the machine by its own share k in
    [0.3, 1]. The verdicts are those of ``report.py compare``: the moderated pass interval, widened by the move of
    the sweeps' canaries."""
    span = ROUNDS * LINES * PASS_S
    start = (np.arange(ROUNDS)[:, None] * LINES + np.arange(LINES)[None, :]) * PASS_S  # (rounds, lines)
    at = start[..., None] + (np.arange(REPEATS) + 1)[None, None, :] * PASS_S / (REPEATS + 1)
    times = np.concatenate([start.ravel(), at.ravel(), start.ravel() + span + GAP_S, at.ravel() + span + GAP_S])
    order = np.argsort(times, kind="stable")
    level = np.empty_like(times)
    level[order] = model.levels(times[order], rng)
    n = start.size
    canary_a, level_a = level[:n], level[n:n + at.size].reshape(at.shape)
    canary_b, level_b = level[n + at.size: 2 * n + at.size], level[2 * n + at.size:].reshape(at.shape)
    k = rng.uniform(0.3, 1.0, LINES)[None, :, None]
    own = np.linspace(-9, -3, LINES)[None, :, None]  # lines from 0.1 ms to 50 ms per call
    passes = np.repeat(np.arange(1, ROUNDS + 1), REPEATS)

    def values(lvl: np.ndarray, slow: np.ndarray) -> list[np.ndarray]:
        t = np.exp(own + np.log(slow)[None, :, None] - k * lvl + rng.normal(0, SAMPLE_SD, lvl.shape))
        return [pass_values(t[:, j, :].ravel(), passes) for j in range(LINES)]

    a, b = values(level_a, np.ones(LINES)), values(level_b, slowdown)
    read_a = canary_a + rng.normal(0, model.noise_sd, n)
    read_b = canary_b + rng.normal(0, model.noise_sd, n)
    moved = {"canary": float(np.median(read_b) - np.median(read_a))}
    out = []
    for c in compare_passes(a, b, THRESHOLD):
        low, high = widen(c.low, c.high, moved)
        out.append(verdict(low, high, THRESHOLD))
    return out


def trials(model: DriftModel, slowdown: np.ndarray, seed: int) -> np.ndarray:
    """Verdicts (trials, lines) of TRIALS seeded comparisons, B slowed by ``slowdown`` per line."""
    rng = np.random.default_rng(seed)
    return np.array([comparison(model, rng, slowdown) for _ in range(TRIALS)])


#: An interleaved comparison (report.py compare --between): pairs of points in one sweep, in the passes it takes to
#: resolve a 20% change at a 10% threshold on this machine.
PAIRS, PAIRED_ROUNDS = 30, 12


def interleaved(model: DriftModel, rng: np.random.Generator, slowdown: np.ndarray) -> list[str]:
    """One synthetic sweep of PAIRS pairs of points (setting A, then B, of one knob: neighbours in the sweep's order),
    in PAIRED_ROUNDS passes, each pass in the order opposite to the one before (as launch_passes runs them), on one
    timeline of the machine's drift; each point's pass is REPEATS samples over PASS_S seconds, each line following
    the machine by its own share k in [0.3, 1]. The verdicts are those of ``report.py compare --between``."""
    points = 2 * PAIRS
    slot = np.array([np.arange(points) if r % 2 == 0 else np.arange(points)[::-1].argsort() for r in
                     range(PAIRED_ROUNDS)])  # (rounds, points): when in its pass each point ran
    start = (np.arange(PAIRED_ROUNDS)[:, None] * points + slot) * PASS_S
    at = start[..., None] + (np.arange(REPEATS) + 1) * PASS_S / (REPEATS + 1)  # (rounds, points, repeats)
    order = np.argsort(at.ravel(), kind="stable")
    level = np.empty(at.size)
    level[order] = model.levels(at.ravel()[order], rng)
    level = level.reshape(at.shape)
    k = np.repeat(rng.uniform(0.3, 1.0, PAIRS), 2)[None, :, None]
    own = np.repeat(np.linspace(-9, -3, PAIRS), 2)[None, :, None]
    slow = np.stack([np.ones(PAIRS), slowdown], axis=1).ravel()[None, :, None]  # A, B of each pair
    t = np.exp(own + np.log(slow) - k * level + rng.normal(0, SAMPLE_SD, level.shape))
    values = np.log(np.median(t, axis=2))  # (rounds, points): each pass's value
    return [c.verdict for c in compare_paired(list(values[:, 0::2].T), list(values[:, 1::2].T), THRESHOLD)]


@pytest.fixture(scope="module")
def model() -> DriftModel:
    return machine()


def test_the_fixture_is_a_model_fitted_on_this_machine(model):
    data = json.loads(FIXTURE.read_text())
    assert data["readings"] >= 600 and set(data["models"]) == {"copy", "sgemm"}
    assert 0 < model.level_sd < 1 and 0 < model.stretch_s < 600 and 0 <= model.noise_sd < 1


def test_unchanged_points_are_not_called_changed_and_a_doubling_is_found(model):
    """1,000 seeded comparisons of demo-shaped sweeps under this machine's drift, a third of the lines unchanged, a
    third 20% slower in B, a third twice as slow (float64 against float32 on a compute-bound product): the unchanged
    are called *faster* or *slower* in at most 5% (the A/A rate), the doubled are *slower* in at least 90%, and a
    slowdown is never called *faster*. (How often the 20% slowdown is found is the drift's to say: with levels that
    hold for tens of seconds at 10 to 20% apart, two sweeps minutes apart rarely resolve it at a 10% threshold.)"""
    slowdown = np.array([1.0, 1.2, 2.0])[np.arange(LINES) % 3]
    v = trials(model, slowdown, seed=29)
    same, twenty, double = (v[:, slowdown == x] for x in (1.0, 1.2, 2.0))
    false = np.isin(same, [FASTER, SLOWER]).mean()
    assert false <= 0.05, f"{false:.1%} of unchanged lines called faster or slower"
    assert (double == SLOWER).mean() >= 0.90, f"found {(double == SLOWER).mean():.1%} of doublings"
    assert not (twenty == FASTER).any() and not (double == FASTER).any()


def test_the_verdict_is_where_the_interval_lies():
    assert verdict(1.15, 1.3, 0.10) == SLOWER and verdict(0.7, 0.85, 0.10) == FASTER
    assert verdict(0.95, 1.05, 0.10) == NO_CHANGE and verdict(1 / 1.1, 1.1, 0.10) == NO_CHANGE
    assert verdict(1.05, 1.2, 0.10) == INCONCLUSIVE and verdict(0.8, 1.2, 0.10) == INCONCLUSIVE


def test_the_moderated_interval_follows_limma():
    """trigamma_inverse inverts SciPy's trigamma; the prior of lines whose variances all equal one true variance
    (chi-square scatter only) is that variance with infinite weight; a lone line keeps its own variance."""
    from scipy import special

    for x in (0.05, 1.0, 30.0):
        assert float(special.polygamma(1, trigamma_inverse(x))) == pytest.approx(x, rel=1e-8)
    rng = np.random.default_rng(0)
    df = np.full(4000, 4.0)
    s2 = 0.01 * rng.chisquare(4, 4000) / 4
    s0, d0 = prior_variance(s2, df)
    assert s0 == pytest.approx(0.01, rel=0.03) and d0 > 100
    a, b = [np.array([0.0, 0.1, -0.1])], [np.array([1.0, 1.1, 0.9])]
    (c,) = compare_passes(a, b, 0.10)
    assert c.ratio == pytest.approx(np.e) and c.basis == "passes"  # its own variance 0.01 on 4 df, t(4)
    half = 2.131847 * np.sqrt(0.01 * (2 / 3))
    assert np.log(c.high) - 1 == pytest.approx(half, rel=1e-6) and c.verdict == SLOWER


def test_one_pass_per_point_rests_on_the_canary_or_is_inconclusive():
    a, b = [np.array([0.0])] * 3, [np.array([0.02])] * 3
    assert {c.verdict for c in compare_passes(a, b, 0.10)} == {INCONCLUSIVE}  # nothing says how much they move
    with_canary = compare_passes(a, b, 0.10, canary=(0.0004, 60))  # the machine moved 2% between readings
    assert {(c.verdict, c.basis) for c in with_canary} == {(NO_CHANGE, "canary")}


def test_requests_compare_on_their_samples():
    rng = np.random.default_rng(3)
    a = rng.lognormal(0, 0.05, (2, 40))
    b = a * np.array([[1.0], [1.5]]) * rng.lognormal(0, 0.01, (2, 40))
    same, slow = compare_samples(a, b, 0.10)
    assert same.verdict == NO_CHANGE and slow.verdict == SLOWER and same.basis == slow.basis == "samples"
    assert slow.low <= slow.ratio <= slow.high


def test_the_drift_fit_recovers_a_known_model():
    truth = DriftModel(level_sd=0.08, stretch_s=6.0, noise_sd=0.03)
    t = np.arange(0, 600, 0.25)
    fits = [fit_drift(t, truth.readings(t, np.random.default_rng(s))) for s in range(5)]
    assert np.median([f.level_sd for f in fits]) == pytest.approx(0.08, rel=0.25)
    assert np.median([f.stretch_s for f in fits]) == pytest.approx(6.0, rel=0.5)
    assert np.median([f.noise_sd for f in fits]) == pytest.approx(0.03, abs=0.015)


def test_the_machines_own_move_widens_the_interval_on_its_side():
    """B measured on a machine 10% slower (by its canary): a point 20% slower might owe all of it to the code or
    half of it to the machine, so its interval's low end drops by the machine's 10%."""
    low, high = widen(1.15, 1.30, {"copy": float(np.log(0.9)), "sgemm": float(np.log(0.95))})
    assert low == pytest.approx(1.15 * 0.9) and high == 1.30
    assert verdict(1.15, 1.30, THRESHOLD) == SLOWER and verdict(low, high, THRESHOLD) == INCONCLUSIVE
    assert widen(0.8, 0.95, {"copy": float(np.log(1.2))}) == pytest.approx((0.8, 0.95 * 1.2))
    assert widen(0.8, 0.95, {}) == (0.8, 0.95)


def test_side_by_side_in_one_sweep_a_20_percent_slowdown_is_found(model):
    """1,000 seeded interleaved sweeps under this machine's drift (a third of the pairs unchanged, a third 20% slower
    in B, a third twice as slow): the level the machine holds is in both settings and cancels, so a 20% slowdown is
    *slower* in at least 90% while the unchanged are called *faster* or *slower* in at most 5%."""
    slowdown = np.array([1.0, 1.2, 2.0])[np.arange(PAIRS) % 3]
    rng = np.random.default_rng(20)
    v = np.array([interleaved(model, rng, slowdown) for _ in range(TRIALS)])
    same, twenty, double = (v[:, slowdown == x] for x in (1.0, 1.2, 2.0))
    false = np.isin(same, [FASTER, SLOWER]).mean()
    assert false <= 0.05, f"{false:.1%} of unchanged lines called faster or slower"
    assert (twenty == SLOWER).mean() >= 0.90, f"found {(twenty == SLOWER).mean():.1%} of 20% slowdowns"
    assert (double == SLOWER).all() and not (twenty == FASTER).any()


def test_the_paired_interval_is_the_t_interval_of_the_pass_differences():
    """Lines whose pass differences scatter exactly as sampling explains share one variance on infinite degrees of
    freedom (a z interval); a lone line keeps its own variance on its own degrees of freedom."""
    a = [np.zeros(4)]
    (c,) = compare_paired(a, [np.array([0.0, 0.2, 0.3, 0.3])], 0.10)
    half = 2.353363 * np.sqrt(np.var([0.0, 0.2, 0.3, 0.3], ddof=1) / 4)  # t(3) at 95%
    assert c.ratio == pytest.approx(np.exp(0.2)) and np.log(c.high) - 0.2 == pytest.approx(half, rel=1e-6)
    assert c.basis == "pairs" and c.verdict == INCONCLUSIVE  # 1.22, its low end 1.035: not beyond 10%
    (sure,) = compare_paired(a, [np.array([0.1, 0.2, 0.3, 0.2])], 0.10)
    assert sure.verdict == SLOWER  # 1.22, its low end 1.110
    (one,) = compare_paired([np.zeros(1)], [np.ones(1)], 0.10)
    assert one.verdict == INCONCLUSIVE  # one pass: no difference to scatter
