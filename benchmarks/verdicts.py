"""How the benchmark scripts print a comparison: the verdict on a target, and a ratio's spread."""

from __future__ import annotations

import numpy as np


def verdict(ok: bool) -> str:
    return "MEETS target" if ok else "MISSES target"


def spread(ratios: np.ndarray, fmt: str = ".2f", suffix: str = "") -> str:
    """``median (quartiles q1-q3, n rounds)`` of per-round ratios."""
    q1, med, q3 = np.percentile(ratios, [25, 50, 75])
    return f"{med:{fmt}}{suffix} (quartiles {q1:{fmt}}-{q3:{fmt}}{suffix}, {len(ratios)} rounds)"
