"""The fidelity of an engine's logits: against the NumPy reference on the same file, and against the
f32 model of the same shape and seed (llama.cpp's ``--kl-divergence`` statistics)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from experiments.engine.schema import EngineConfig
from infer_core.measure.files import atomic_path
from infer_core.model import Model, init_weights
from infer_core.model.fidelity import Agreement, Divergence, entropy
from infer_core.model.store import model_key


def base_logits(cfg: EngineConfig, seed: int, tokens: np.ndarray) -> np.ndarray:
    """Logits of the f32 model of this shape and seed on ``tokens``, cached beside the model files."""
    shape = cfg.model_shape
    path = Path(cfg.models_dir) / f"{model_key(cfg.model, shape, 'f32', seed)}-logits-{len(tokens)}.npy"
    if path.is_file():
        return np.load(path)
    with threadpool_limits(cfg.n_threads, user_api="blas"):
        logits = Model(shape, init_weights(shape, seed, cfg.n_threads)).logits(tokens).astype(np.float32)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, logits)
    return logits


def compare(cfg: EngineConfig, seed: int, check: np.ndarray, logits: np.ndarray, ref: np.ndarray) -> dict:
    """The fidelity columns for an engine's ``logits`` on the ``check`` tokens, the reference's ``ref``."""
    agree = Agreement.of(ref, logits)
    out = {"check_tokens": len(check), "max_abs_diff_vs_ref": agree.max_abs_diff,
           "max_rel_diff_vs_ref": agree.max_rel_diff, "top1_agree_vs_ref": agree.top1_agreement,
           "log_vocab": float(np.log(logits.shape[1]))}
    if cfg.made:  # a file or a real model has no f32 twin made here
        base = base_logits(cfg, seed, check)
        div = Divergence.of(base, logits)
        out |= {"mean_kld_vs_f32": div.mean_kld, "median_kld_vs_f32": div.median_kld, "p99_kld_vs_f32": div.p99_kld,
                "max_kld_vs_f32": div.max_kld, "same_top_vs_f32": div.same_top,
                "f32_mean_entropy": float(entropy(base).mean())}
    return out
