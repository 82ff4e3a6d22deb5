"""The real engine computes what our reference computes: llama.cpp (through llama-cpp-python) runs GGUF
files this project writes, and its logits are compared with ``load_gguf(...).logits`` on the same tokens."""

from __future__ import annotations

import numpy as np
import pytest
from llama_cpp import Llama

from infer_core.model import PRESETS, load_gguf, write_gguf

F32_CACHE = 0  # GGML type id of float32, for llama.cpp's K and V cache


def both(path, tokens: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(reference logits, llama.cpp logits) of ``tokens``, float64."""
    llm = Llama(model_path=str(path), n_ctx=512, n_batch=256, n_ubatch=256, logits_all=True, type_k=F32_CACHE,
                type_v=F32_CACHE, n_threads=2, verbose=False)
    llm.eval(tokens)
    theirs = np.array(llm.scores[: len(tokens)], dtype=np.float64)
    llm.close()
    return load_gguf(path, "float64").logits(tokens), theirs


@pytest.mark.parametrize("name", ["tiny", "tiny-qwen2"])  # llama: adjacent-pair rotary; qwen2: halves, biases, tied
def test_llamacpp_logits_equal_the_reference_with_f32_weights_and_cache(tmp_path, name):
    shape = PRESETS[name]
    tokens = [int(t) for t in np.random.default_rng(4).integers(3, shape.n_vocab, 64)]
    ours, theirs = both(write_gguf(tmp_path / f"{name}.gguf", shape, "f32", seed=0), tokens)
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(ours).max()
    assert (ours.argmax(axis=1) == theirs.argmax(axis=1)).all()


def test_llamacpp_agrees_on_the_next_token_with_q8_0_weights(tmp_path):
    """llama.cpp also quantizes activations in its q8_0 dot products, so logits differ a little;
    the next token agrees at least 95% of the time over 256 tokens."""
    shape = PRESETS["tiny"]
    tokens = [int(t) for t in np.random.default_rng(4).integers(3, shape.n_vocab, 256)]
    ours, theirs = both(write_gguf(tmp_path / "q8.gguf", shape, "q8_0", seed=0), tokens)
    assert (ours.argmax(axis=1) == theirs.argmax(axis=1)).mean() >= 0.95
    assert 0 < np.abs(ours - theirs).max() < 0.05 * np.abs(ours).max()
