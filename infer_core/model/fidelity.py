"""How far one model's next-token distributions are from another's, as llama.cpp's ``--kl-divergence``
reports it: the KL divergence of each token's distribution from the base model's, its mean and
percentiles, and how often both put the most probability on the same token ("same top").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log p over the last axis, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def entropy(logits: np.ndarray) -> np.ndarray:
    """Entropy of each row's next-token distribution [nats]: log(n_vocab) when flat, 0 when certain."""
    logp = log_softmax(logits)
    return -(np.exp(logp) * logp).sum(axis=-1)


def kl_divergence(base: np.ndarray, other: np.ndarray) -> np.ndarray:
    """KL(p_base ‖ p_other) per row [nats], as llama.cpp computes it: Σ p_base · (log p_base − log p_other)."""
    lb, lo = log_softmax(base), log_softmax(other)
    return np.maximum((np.exp(lb) * (lb - lo)).sum(axis=-1), 0.0)


@dataclass(frozen=True)
class Divergence:
    """Statistics of the per-token KL divergence of ``other`` from ``base`` over the same tokens."""

    mean_kld: float
    median_kld: float
    p99_kld: float
    max_kld: float
    same_top: float  # share of tokens whose most likely next token is the same in both

    @classmethod
    def of(cls, base: np.ndarray, other: np.ndarray) -> Divergence:
        """The statistics for logits ``base`` and ``other``, both (tokens, n_vocab)."""
        if base.shape != other.shape or base.ndim != 2:
            raise ValueError(f"need two (tokens, n_vocab) arrays of one shape, got {base.shape} and {other.shape}")
        kld = kl_divergence(base, other)
        return cls(float(kld.mean()), float(np.median(kld)), float(np.percentile(kld, 99)), float(kld.max()),
                   float((base.argmax(axis=1) == other.argmax(axis=1)).mean()))


@dataclass(frozen=True)
class Agreement:
    """Two computations of the same logits (an engine and the reference) compared token by token."""

    max_abs_diff: float
    max_rel_diff: float  # max_abs_diff / max |reference logit|
    top1_agreement: float  # share of tokens whose argmax is the same

    @classmethod
    def of(cls, reference: np.ndarray, logits: np.ndarray) -> Agreement:
        diff = float(np.abs(np.asarray(logits, np.float64) - reference).max())
        return cls(diff, diff / (float(np.abs(reference).max()) or 1.0),
                   float((reference.argmax(axis=1) == np.asarray(logits).argmax(axis=1)).mean()))
