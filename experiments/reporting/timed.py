"""The timed lines of a comparison: each line's interval of the time ratio and its verdict
(:mod:`experiments.reporting.stats`), by what the line has: passes in two sweeps, passes side by side in one
sweep, or samples only."""

from __future__ import annotations

import numpy as np
import pandas as pd

from experiments.reporting import drift
from experiments.reporting.stats import Change, compare_paired, compare_passes, compare_samples, pass_values, verdict
from experiments.reporting.sweeps import Samples

COLUMNS = ["experiment", "point", "measure", "sweep", "median_a_s", "median_b_s", "ratio", "ratio_low", "ratio_high",
           "verdict", "basis", "passes_a", "passes_b", "gap_s", "machine_off"]


def timed_lines(lines: list[dict], samples: list[tuple[Samples, Samples]], threshold: float,
                canary: tuple[float, float] | None, moved: dict[tuple[str, str], dict[str, float]],
                paired: bool = False) -> pd.DataFrame:
    """The lines with their intervals and verdicts. Lines with passes are compared per experiment and sweep: in two
    sweeps by :func:`~experiments.reporting.stats.compare_passes`, the interval widened by how far the machine itself
    moved between them (``moved`` by experiment and sweep: :func:`~experiments.reporting.drift.widen`, empty when
    paired); side by side in one sweep (``paired``) by :func:`~experiments.reporting.stats.compare_paired`. The others
    are compared on their samples, in batches of pairs with the same sample counts."""
    by_pass: dict[tuple[str, str], list[int]] = {}
    others: dict[tuple[int, int], list[int]] = {}
    for i, (xa, xb) in enumerate(samples):
        if xa.passes is not None and xb.passes is not None:
            by_pass.setdefault((lines[i]["experiment"], lines[i]["sweep"]), []).append(i)
    for idx in by_pass.values():
        a = [pass_values(samples[i][0].times, samples[i][0].passes) for i in idx]
        b = [pass_values(samples[i][1].times, samples[i][1].passes) for i in idx]
        if not paired and canary is None and all(len(x) == 1 and len(y) == 1 for x, y in zip(a, b, strict=True)):
            for i in idx:  # one pass each and no canary: the samples are all there is
                others.setdefault((len(samples[i][0].times), len(samples[i][1].times)), []).append(i)
            continue
        changes = compare_paired(a, b, threshold) if paired else compare_passes(a, b, threshold, canary)
        for i, x, y, c in zip(idx, a, b, changes, strict=True):
            low, high = drift.widen(c.low, c.high, moved.get((lines[i]["experiment"], lines[i]["sweep"]), {}))
            lines[i].update({**fields(c), "passes_a": len(x), "passes_b": len(y), "ratio_low": low,
                             "ratio_high": high, "verdict": verdict(low, high, threshold) if np.isfinite(low)
                             else c.verdict})
    for i, (xa, xb) in enumerate(samples):
        if xa.passes is None or xb.passes is None:
            others.setdefault((len(xa.times), len(xb.times)), []).append(i)
    for idx in others.values():
        changes = compare_samples(np.stack([samples[i][0].times for i in idx]),
                                  np.stack([samples[i][1].times for i in idx]), threshold)
        for i, c in zip(idx, changes, strict=True):
            lines[i].update(passes_a=1, passes_b=1, **fields(c))
    for line, (xa, xb) in zip(lines, samples, strict=True):
        line.update(median_a_s=float(np.median(xa.times)), median_b_s=float(np.median(xb.times)))
    return pd.DataFrame(lines).reindex(columns=COLUMNS) if lines else pd.DataFrame(columns=COLUMNS)


def fields(c: Change) -> dict:
    return {"ratio": c.ratio, "ratio_low": c.low, "ratio_high": c.high, "verdict": c.verdict, "basis": c.basis}
