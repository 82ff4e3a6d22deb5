"""The NumPy reference on a real model: SmolLM2-135M dequantized into a float32 file by our requantizer gives the
same logits in llama.cpp (f32 KV cache) and in ``load_gguf(...).logits`` over 256 tokens of real text, and the same
perplexity. The model is cached outside the clone (shared/packaged.py), so a second run downloads nothing."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.shared.llamacpp import LlamaCpp
from experiments.shared.packaged import ModelFetchError, packaged_file
from experiments.shared.text import read_text
from infer_core.model import load_gguf
from infer_core.model.quality import TokenScores, scored_positions, summarize
from infer_core.model.requantize import requantize_gguf

N_TOKENS = 256


def test_the_numpy_reference_computes_llamacpps_logits_and_perplexity_on_the_real_model(tmp_path):
    try:
        source, _ = packaged_file("smollm2-135m-instruct")
    except ModelFetchError as exc:
        pytest.skip(f"SmolLM2-135M can be neither fetched nor found: {exc}")
    f32 = requantize_gguf(source, tmp_path / "f32.gguf", "f32", threads=2)
    with LlamaCpp(f32, 1, N_TOKENS, n_batch=N_TOKENS, n_ubatch=N_TOKENS, type_k="f32", type_v="f32",
                  logits_all=True) as engine:
        tokens = np.array(engine.llm.tokenize(read_text("pydoc").encode(), add_bos=True, special=False)[:N_TOKENS])
        theirs = engine.logits(tokens)
    ours = load_gguf(f32, threads=2).logits(tokens)
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(ours).max()  # float32 sums over 30 layers, two orders
    assert (ours.argmax(axis=1) == theirs.argmax(axis=1)).all()
    pos = scored_positions(N_TOKENS)  # llama-perplexity's: the second half of the chunk
    ppl = [summarize(TokenScores.of(x[pos], x[pos], tokens[pos.start + 1:]))["ppl"] for x in (ours, theirs)]
    assert 3 < ppl[1] < 100 and ppl[0] == pytest.approx(ppl[1], rel=1e-3)
