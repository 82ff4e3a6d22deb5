"""A model of a shared machine's drift, fitted from a canary's time series, and drawn from for synthetic tests.

The machine's log speed is modelled as a level that holds for a stretch and then jumps to a new one, plus noise
of each reading on its own:

    log speed(t) = L(t) + e,   L constant over stretches whose lengths are exponential with mean ``stretch_s``,
                               each stretch's level ~ N(0, level_sd²), e ~ N(0, noise_sd²) independently.

Two readings ``h`` seconds apart are in the same stretch with probability exp(−h / stretch_s), so the variogram
(half the mean squared difference of two readings ``h`` apart) is

    γ(h) = noise_sd² + level_sd² · (1 − exp(−h / stretch_s)),

which :func:`fit_drift` fits to the empirical one (least squares over lag bins; for each stretch length on a
grid, the two variances are a linear fit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The stretch lengths tried by the fit [s].
STRETCH_GRID = np.geomspace(0.25, 600, 160)


@dataclass(frozen=True)
class DriftModel:
    """Stretches of ``stretch_s`` seconds on average at levels spread by ``level_sd``, each reading off by ``noise_sd``
    (both in natural log of the speed)."""

    level_sd: float
    stretch_s: float
    noise_sd: float

    def levels(self, times_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The drift's level (log speed, without the reading noise) at each of the sorted ``times_s``."""
        times_s = np.asarray(times_s, dtype=np.float64)
        span = float(times_s[-1] - times_s[0]) if len(times_s) else 0.0
        n_changes = rng.poisson(span / self.stretch_s) if self.stretch_s > 0 else 0
        changes = np.sort(rng.uniform(times_s[0] if len(times_s) else 0.0, (times_s[-1] if len(times_s) else 0.0),
                                      n_changes))
        stretch = np.searchsorted(changes, times_s, side="right")  # which stretch each time falls in
        return rng.normal(0.0, self.level_sd, n_changes + 1)[stretch]

    def readings(self, times_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Synthetic log-speed readings at ``times_s``: the levels plus each reading's noise."""
        return self.levels(times_s, rng) + rng.normal(0.0, self.noise_sd, len(times_s))


def variogram(times_s: np.ndarray, values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The empirical variogram: for each lag bin ``[edges[i], edges[i+1])``, the mean lag, half the mean squared
    difference of the pairs of readings that far apart, and the number of pairs."""
    t, v = np.asarray(times_s, dtype=np.float64), np.asarray(values, dtype=np.float64)
    lag = np.abs(t[:, None] - t[None, :])[np.triu_indices(len(t), 1)]
    sq = 0.5 * ((v[:, None] - v[None, :]) ** 2)[np.triu_indices(len(t), 1)]
    which = np.digitize(lag, edges) - 1
    keep = (which >= 0) & (which < len(edges) - 1)
    count = np.bincount(which[keep], minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_lag = np.bincount(which[keep], lag[keep], len(edges) - 1) / count
        gamma = np.bincount(which[keep], sq[keep], len(edges) - 1) / count
    return mean_lag, gamma, count


def fit_drift(times_s: np.ndarray, log_speed: np.ndarray, max_lag_s: float | None = None) -> DriftModel:
    """Fit :class:`DriftModel` to readings of log speed taken at ``times_s`` (seconds, increasing); lags up to
    ``max_lag_s`` (default: a third of the span) are used, each bin weighted by its number of pairs."""
    t = np.asarray(times_s, dtype=np.float64)
    span = float(t[-1] - t[0])
    step = float(np.median(np.diff(t)))
    edges = np.geomspace(step / 2, max_lag_s or span / 3, 40)
    lag, gamma, count = variogram(t, log_speed, edges)
    ok = count > 0
    lag, gamma, w = lag[ok], gamma[ok], np.sqrt(count[ok])
    best = (np.inf, 0.0, 1.0, 0.0)
    for tau in STRETCH_GRID:
        design = np.stack([np.ones_like(lag), 1 - np.exp(-lag / tau)], axis=1)
        coef, *_ = np.linalg.lstsq(design * w[:, None], gamma * w, rcond=None)
        coef = np.clip(coef, 0, None)
        err = float(np.sum((w * (design @ coef - gamma)) ** 2))
        if err < best[0]:
            best = (err, float(coef[1]), float(tau), float(coef[0]))
    _, level_var, tau, noise_var = best
    return DriftModel(level_sd=float(np.sqrt(level_var)), stretch_s=tau, noise_sd=float(np.sqrt(noise_var)))
