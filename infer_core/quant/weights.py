"""Synthetic weight matrices W[out, in] with the shapes of real LLM weight statistics."""

from __future__ import annotations

import numpy as np

DISTRIBUTIONS = ("gaussian", "demo_matrix", "student_t", "outlier_channels", "layernorm")


def synthetic_weights(distribution: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """A float32 (rows, cols) matrix drawn from ``rng``.

    ``gaussian``: N(0, 0.02²). ``demo_matrix``: the classic demo's matrix, N(0, 0.02²) with rows
    0-99 scaled ×2 and the last 50 ×0.5. ``student_t``: Student's t with 3 degrees of freedom
    scaled to std 0.02 (heavy tails). ``outlier_channels``: N(0, 0.02²) with 1% of the input
    columns (at least one) ×20, as in LLM weights facing outlier features. ``layernorm``: all
    positive around 1 (|N(1, 0.05²)|), like normalization gains.
    """
    shape = (rows, cols)
    if distribution in ("gaussian", "demo_matrix", "outlier_channels"):
        w = rng.normal(0.0, 0.02, shape)
        if distribution == "demo_matrix":
            w[:100] *= 2.0
            w[-50:] *= 0.5
        elif distribution == "outlier_channels":
            cols_hit = rng.choice(cols, size=max(1, cols // 100), replace=False)
            w[:, cols_hit] *= 20.0
    elif distribution == "student_t":
        w = rng.standard_t(3, shape) * (0.02 / np.sqrt(3.0))
    elif distribution == "layernorm":
        w = np.abs(rng.normal(1.0, 0.05, shape))
    else:
        raise ValueError(f"distribution={distribution!r} must be one of {', '.join(DISTRIBUTIONS)}")
    return w.astype(np.float32)
