"""Quantization error metrics, all computed in float64."""

from __future__ import annotations

import numpy as np


def sqnr_db(signal_sq: float, noise_sq: float) -> float:
    """10·log10(signal / noise) from sums of squares; +inf when the noise is zero."""
    if noise_sq == 0:
        return float("inf")
    if signal_sq == 0:
        return float("-inf")
    return float(10 * np.log10(signal_sq / noise_sq))


def error_metrics(w: np.ndarray, w_hat: np.ndarray) -> dict[str, float]:
    """MAE, max abs error, MSE, relative L2 ‖w−ŵ‖/‖w‖ and SQNR in dB of a reconstruction."""
    w, e = np.asarray(w, np.float64), np.asarray(w_hat, np.float64) - np.asarray(w, np.float64)
    signal, noise = float(np.sum(w * w)), float(np.sum(e * e))
    return {
        "mae": float(np.mean(np.abs(e))),
        "max_abs_err": float(np.max(np.abs(e))),
        "mse": noise / e.size,
        "rel_l2": float(np.sqrt(noise / signal)) if signal else float("inf"),
        "sqnr_db": sqnr_db(signal, noise),
    }


def channel_errors(w: np.ndarray, w_hat: np.ndarray) -> dict[str, np.ndarray]:
    """Per output row: mean abs error, MSE, max abs error, SQNR (dB)."""
    w, e = np.asarray(w, np.float64), np.asarray(w_hat, np.float64) - np.asarray(w, np.float64)
    signal, noise = np.sum(w * w, axis=1), np.sum(e * e, axis=1)
    with np.errstate(divide="ignore"):
        sq = np.where(noise == 0, np.inf, 10 * np.log10(signal / np.where(noise == 0, 1, noise)))
    return {"mae": np.mean(np.abs(e), axis=1), "mse": noise / w.shape[1],
            "max_abs_err": np.max(np.abs(e), axis=1), "sqnr_db": sq}


def output_cosine(w: np.ndarray, w_hat: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Cosine similarity of W·x and Ŵ·x for each input column of ``x`` (in, n)."""
    y = np.asarray(w, np.float64) @ np.asarray(x, np.float64)
    y_hat = np.asarray(w_hat, np.float64) @ np.asarray(x, np.float64)
    num = np.sum(y * y_hat, axis=0)
    den = np.linalg.norm(y, axis=0) * np.linalg.norm(y_hat, axis=0)
    return np.where(den == 0, np.where(num == 0, 1.0, 0.0), num / np.where(den == 0, 1, den))
