"""Is B slower than A? A verdict that says what is known: an interval of the time ratio B / A, then

- *slower* (or *faster*) when the whole interval lies beyond 1 + threshold (or below 1 / (1 + threshold)),
- *no change* when the whole interval lies within those bounds (an equivalence test, as TOST: each one-sided
  claim at 5%, hence a 90% interval),
- *inconclusive* otherwise: the data cannot tell a change of the threshold's size from none.

A timed point's unit of replication is its pass (``sweep.rounds``): the passes are spread over the sweep, so their
spread is the machine's drift as this point felt it, which the samples of one pass cannot see. Each pass gives one
value, the log of its median time per call. The interval is a t interval of the difference of the two sweeps' mean
pass values; its variance is the point's own between-pass variance moderated by that of every point compared with
it (limma's empirical Bayes: Smyth 2004), so that two or three passes per point still give an honest interval. The
pass effect all lines share (the machine's level during a pass) is added once more per sweep, undivided by the
passes: the machine may hold a level for minutes, longer than a sweep. With one pass per point, the sweeps' drift
canary stands in for the between-pass variance. Served requests (and sweeps
with neither passes nor canary) are compared on their samples with a bootstrap interval, which sees only the
variation within one run. Two settings measured in one sweep (``report.py compare --between``) are compared pass by
pass (:func:`compare_paired`): their passes run side by side, so the machine's level is in both and cancels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

LEVEL = 0.90  # two-sided: each one-sided claim (beyond the threshold, or within it) at 5%
NO_CHANGE, FASTER, SLOWER, INCONCLUSIVE = "no change", "faster", "slower", "inconclusive"
VERDICTS = (FASTER, SLOWER, NO_CHANGE, INCONCLUSIVE)
PASSES, PAIRS, CANARY, SAMPLES = "passes", "pairs", "canary", "samples"


@dataclass(frozen=True)
class Change:
    """B against A: ``ratio`` of times (above 1: B is slower), its interval, the verdict and what the interval
    rests on (``passes``, ``canary`` or ``samples``)."""

    ratio: float
    low: float
    high: float
    verdict: str
    basis: str


def verdict(low: float, high: float, threshold: float) -> str:
    """The verdict of an interval of a time ratio at ``threshold`` (0.10: 10%)."""
    factor = 1 + threshold
    if low > factor:
        return SLOWER
    if high < 1 / factor:
        return FASTER
    if low >= 1 / factor and high <= factor:
        return NO_CHANGE
    return INCONCLUSIVE


def pass_values(times: np.ndarray, passes: np.ndarray) -> np.ndarray:
    """The log of the median time of each pass."""
    order = np.unique(passes)
    return np.array([np.log(np.median(times[passes == p])) for p in order])


def trigamma_inverse(x: float) -> float:
    """y with trigamma(y) = x (Newton's method, as limma's ``trigammaInverse``)."""
    if x > 1e7:
        return 1 / np.sqrt(x)
    if x < 1e-6:
        return 1 / x
    y = 0.5 + 1 / x
    for _ in range(50):
        tri = float(special.polygamma(1, y))
        step = tri * (1 - tri / x) / float(special.polygamma(2, y))
        y += step
        if -step / y < 1e-8:
            break
    return y


def prior_variance(s2: np.ndarray, df: np.ndarray) -> tuple[float, float]:
    """(s0², d0): the variance the lines share and how many degrees of freedom it is worth, fitted to the lines'
    own variances ``s2`` on ``df`` degrees of freedom (limma's ``fitFDist`` without covariates). ``d0`` is inf when
    the lines' variances spread no more than sampling explains, 0 when fewer than two lines have one."""
    ok = (df > 0) & (s2 > 0)
    if ok.sum() < 2:
        return (float(np.mean(s2[ok])) if ok.any() else 0.0), 0.0
    s2, df = s2[ok], df[ok]
    e = np.log(s2) - special.digamma(df / 2) + np.log(df / 2)
    emean = float(e.mean())
    evar = float(((e - emean) ** 2).sum() / (len(e) - 1) - special.polygamma(1, df / 2).mean())
    if evar <= 0:
        return float(np.exp(emean)), np.inf
    d0 = 2 * trigamma_inverse(evar)
    return float(np.exp(emean + special.digamma(d0 / 2) - np.log(d0 / 2))), d0


def compare_passes(a: list[np.ndarray], b: list[np.ndarray], threshold: float,
                   canary: tuple[float, float] | None = None) -> list[Change]:
    """Lines of pass values (``a[i]`` of sweep A, ``b[i]`` of sweep B, logs of per-pass median times): the
    moderated t interval of each line's ratio, and its verdict. ``canary`` (variance, degrees of freedom) is the
    drift the sweeps' canaries saw, used when no line has two passes in a sweep."""
    pooled = [_pooled(x, y) for x, y in zip(a, b, strict=True)]
    s2 = np.array([v for v, _ in pooled])
    df = np.array([d for _, d in pooled], dtype=np.float64)
    s0, d0 = prior_variance(s2, df)
    basis = PASSES
    if not (df > 0).any() and canary is not None:
        (s0, d0), basis = canary, CANARY
    var, dof = _moderated(s2, df, s0, d0)
    diff = np.array([np.mean(y) - np.mean(x) for x, y in zip(a, b, strict=True)])
    n = np.array([1 / len(x) + 1 / len(y) for x, y in zip(a, b, strict=True)])
    own = var * n
    common, common_df = common_variance(a, b)
    shared = common * np.array([2 - 1 / len(x) - 1 / len(y) for x, y in zip(a, b, strict=True)])
    total = own + shared
    with np.errstate(invalid="ignore", divide="ignore"):  # Welch–Satterthwaite degrees of freedom
        dof = total**2 / (own**2 / dof + (shared**2 / common_df if common_df else 0.0))
    return t_changes(diff, total, dof, threshold, basis)


def t_changes(diff: np.ndarray, var: np.ndarray, dof: np.ndarray, threshold: float, basis: str) -> list[Change]:
    """Each line's t interval at :data:`LEVEL` of a log ratio ``diff`` with variance ``var`` on ``dof`` degrees of
    freedom, as a ratio, and its verdict (*inconclusive* where the variance is not known)."""
    ok = np.isfinite(var) & (dof > 0)
    half = np.full(len(diff), np.nan)
    half[ok] = stats.t.ppf(0.5 + LEVEL / 2, np.minimum(dof[ok], 1e6)) * np.sqrt(var[ok])
    low, high = np.exp(diff - half), np.exp(diff + half)
    return [Change(float(np.exp(d)), float(lo), float(hi), verdict(lo, hi, threshold) if k else INCONCLUSIVE, basis)
            for d, lo, hi, k in zip(diff, low, high, ok, strict=True)]


def compare_paired(a: list[np.ndarray], b: list[np.ndarray], threshold: float) -> list[Change]:
    """Lines of pass values of two settings measured side by side in each pass of one sweep: each line's differences
    ``b[i][r] − a[i][r]`` (what the machine did within the seconds between the two is in their spread), their
    variance moderated across the lines as in :func:`compare_passes`, and the t interval of their mean."""
    d = [y[:n] - x[:n] for x, y in zip(a, b, strict=True) for n in [min(len(x), len(y))]]
    df = np.array([len(x) - 1 for x in d], dtype=np.float64)
    s2 = np.array([float(x.var(ddof=1)) if len(x) > 1 else np.nan for x in d])
    var, dof = _moderated(s2, df, *prior_variance(s2, df))
    mean, n = np.array([x.mean() for x in d]), np.array([len(x) for x in d])
    return t_changes(mean, var / n, dof, threshold, PAIRS)


def common_variance(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, int]:
    """The variance of the pass effect every line shares (the machine's level during a pass, as all the lines of
    the experiment felt it), pooled over both sweeps, and its degrees of freedom: 0 with one pass or one line.

    A line's own pass values see this effect averaged over its passes; the sweeps' levels as wholes need not
    average out (the machine may sit minutes at one level), so the comparison adds it once per sweep, undivided."""
    ss, df = 0.0, 0
    for lines in (a, b):
        most = max((len(x) for x in lines), default=0)
        full = np.array([x for x in lines if len(x) == most])
        if most < 2 or len(full) < 2:
            continue
        effect = (full - full.mean(axis=1, keepdims=True)).mean(axis=0)
        ss, df = ss + float(((effect - effect.mean()) ** 2).sum()), df + most - 1
    return (ss / df, df) if df else (0.0, 0)


def _pooled(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """The within-sweep variance of a line's pass values, pooled over both sweeps, and its degrees of freedom."""
    df = len(x) - 1 + len(y) - 1
    if df <= 0:
        return np.nan, 0
    return float((((x - x.mean()) ** 2).sum() + ((y - y.mean()) ** 2).sum()) / df), df


def _moderated(s2: np.ndarray, df: np.ndarray, s0: float, d0: float) -> tuple[np.ndarray, np.ndarray]:
    """The posterior variance of each line and its degrees of freedom (NaN and 0 where nothing is known)."""
    if np.isinf(d0):
        return np.full(len(s2), s0), np.full(len(s2), np.inf)
    own = np.where(df > 0, np.nan_to_num(s2), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (d0 * s0 + df * own) / (d0 + df)
    return np.where(d0 + df > 0, var, np.nan), d0 + df


def compare_samples(a: np.ndarray, b: np.ndarray, threshold: float, seed: int = 0) -> list[Change]:
    """Many pairs of samples at once (``a`` (pairs, n), ``b`` (pairs, m)): the ratio of medians with a bootstrap
    percentile interval at :data:`LEVEL` (the variation within one run only), and its verdict."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ratio = np.median(b, axis=1) / np.median(a, axis=1)
    if a.shape[1] >= 2 and b.shape[1] >= 2:
        res = stats.bootstrap((a, b), lambda x, y, axis: np.median(y, axis=axis) / np.median(x, axis=axis),
                              vectorized=True, paired=False, axis=-1, n_resamples=999, method="percentile",
                              confidence_level=LEVEL, random_state=np.random.default_rng(seed))
        low, high = np.atleast_1d(res.confidence_interval.low), np.atleast_1d(res.confidence_interval.high)
    else:
        low = high = np.full(len(a), np.nan)
    return [Change(float(r), float(lo), float(hi), verdict(lo, hi, threshold) if np.isfinite(lo) else INCONCLUSIVE,
                   SAMPLES) for r, lo, hi in zip(ratio, low, high, strict=True)]
