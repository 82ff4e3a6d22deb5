"""The real engine computes what our reference computes: llama.cpp (through llama-cpp-python) runs GGUF
files this project writes, and its logits are compared with ``load_gguf(...).logits`` on the same tokens."""

from __future__ import annotations

import numpy as np
import pytest
from llama_cpp import Llama

from infer_core.model import PRESETS, ModelShape, load_gguf, write_gguf

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


def llamacpp_quantize(src, dst, ftype: int) -> None:
    """Quantize ``src`` into ``dst`` with llama.cpp's own quantizer (``llama_model_quantize``)."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = ftype, 2
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) == 0


def tensor_types(path) -> dict[str, str]:
    from gguf import GGUFReader

    return {t.name: t.tensor_type.name.lower() for t in GGUFReader(path).tensors}


#: 12 layers of width 256, so K-quant rows fit and use_more_bits picks layers 0, 3, 6, 9, 10, 11; the tied
#: qwen2 shape's 128-wide rows exercise llama.cpp's fallbacks (Q4_K to Q5_0, Q6_K to Q8_0) instead.
MIX_SHAPES = {"llama, 12 layers": ModelShape("llama", 256, 12, 4, 2, 512, 512, context=512),
              "qwen2, tied, 128 wide": PRESETS["tiny-qwen2"]}


@pytest.mark.parametrize("mix,ftype", [("q4_k_m", 15), ("q5_k_m", 17)])  # LLAMA_FTYPE_MOSTLY_Q4_K_M, Q5_K_M
@pytest.mark.parametrize("label", list(MIX_SHAPES))
def test_our_mixes_choose_the_tensor_types_llamacpps_quantizer_chooses(tmp_path, mix, ftype, label):
    shape = MIX_SHAPES[label]
    src = write_gguf(tmp_path / "f32.gguf", shape, "f32", seed=0)
    llamacpp_quantize(src, tmp_path / "theirs.gguf", ftype)
    ours = write_gguf(tmp_path / "ours.gguf", shape, mix, seed=0)
    theirs = tensor_types(tmp_path / "theirs.gguf")
    assert tensor_types(ours) == theirs
    assert sum(t == "q6_k" for t in theirs.values()) > 0  # the mix really mixes


@pytest.mark.parametrize("q8_matrix", [False, True])
def test_a_file_from_ggufs_own_writer_agrees_with_llamacpp(tmp_path, q8_matrix):
    """Built here with gguf's GGUFWriter (not our writer), f32 weights, or one matrix stored by gguf's own
    Q8_0 quantizer: load_gguf reads it, and llama.cpp computes the same logits (the same tolerance as
    our files; with a q8_0 matrix llama.cpp also quantizes the activations of that product)."""
    from gguf import GGMLQuantizationType, GGUFWriter, quants

    from infer_core.model import init_weights
    from infer_core.model.gguf_io import vocabulary

    shape = PRESETS["tiny"]
    path = tmp_path / "theirs.gguf"
    w = GGUFWriter(str(path), "llama")
    w.add_context_length(512)
    w.add_embedding_length(shape.d_model)
    w.add_block_count(shape.n_layers)
    w.add_feed_forward_length(shape.d_ffn)
    w.add_head_count(shape.n_heads)
    w.add_head_count_kv(shape.n_kv_heads)
    w.add_layer_norm_rms_eps(shape.norm_eps)
    w.add_rope_freq_base(shape.rope_theta)
    tokens, scores, types = vocabulary(shape.n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    for name, tensor in init_weights(shape, 11).items():
        if q8_matrix and name == "blk.1.ffn_up.weight":
            w.add_tensor(name, quants.quantize(tensor, GGMLQuantizationType.Q8_0), raw_dtype=GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, tensor)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    ids = [int(t) for t in np.random.default_rng(4).integers(3, shape.n_vocab, 64)]
    ours, theirs = both(path, ids)
    assert np.abs(ours - theirs).max() <= (1e-2 if q8_matrix else 1e-4) * np.abs(ours).max()
    assert (ours.argmax(axis=1) == theirs.argmax(axis=1)).mean() >= (0.95 if q8_matrix else 1.0)
