"""Is B slower than A? Two sets of timing samples compared: the ratio of medians with a bootstrap interval,
a Mann–Whitney U test (SciPy's), and a verdict that needs both significance and a size past a threshold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05  # two-sided significance level of the rank test
NO_CHANGE, FASTER, SLOWER = "no significant change", "faster", "slower"


@dataclass(frozen=True)
class Change:
    """B against A: ``ratio`` = median(B) / median(A) of times (above 1: B is slower)."""

    ratio: float
    low: float  # bootstrap interval of the ratio (95%, percentile)
    high: float
    p_value: float
    verdict: str


def compare_times(a: np.ndarray, b: np.ndarray, threshold: float = 0.10, alpha: float = ALPHA,
                  seed: int = 0, interval: bool = True) -> Change:
    """Times ``b`` against ``a``: a change counts when the rank test rejects "same distribution" at ``alpha``
    and the ratio of medians lies outside [1 / (1 + threshold), 1 + threshold] (asv's factor). The verdict does
    not use the interval; ``interval=False`` skips it (NaN)."""
    return compare_batch(np.asarray(a)[None], np.asarray(b)[None], threshold, alpha, seed, interval)[0]


def compare_batch(a: np.ndarray, b: np.ndarray, threshold: float = 0.10, alpha: float = ALPHA, seed: int = 0,
                  interval: bool = True) -> list[Change]:
    """:func:`compare_times` for many pairs at once: ``a`` (pairs, n) against ``b`` (pairs, m), one call of each
    SciPy routine for all of them."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ratio = np.median(b, axis=1) / np.median(a, axis=1)
    p = np.atleast_1d(stats.mannwhitneyu(a, b, alternative="two-sided", axis=1).pvalue)
    if interval and a.shape[1] >= 2 and b.shape[1] >= 2:
        res = stats.bootstrap((a, b), lambda x, y, axis: np.median(y, axis=axis) / np.median(x, axis=axis),
                              vectorized=True, paired=False, axis=-1, n_resamples=999, method="percentile",
                              random_state=np.random.default_rng(seed))
        low, high = np.atleast_1d(res.confidence_interval.low), np.atleast_1d(res.confidence_interval.high)
    else:
        low = high = np.full(len(a), np.nan)
    factor = 1 + threshold
    out = []
    for r, pv, lo, hi in zip(ratio, p, low, high, strict=True):
        verdict = SLOWER if pv < alpha and r > factor else FASTER if pv < alpha and r < 1 / factor else NO_CHANGE
        out.append(Change(float(r), float(lo), float(hi), float(pv), verdict))
    return out
