"""The real engine computes what our reference computes: llama.cpp (through llama-cpp-python) runs GGUF
files this project writes, and its logits are compared with ``load_gguf(...).logits`` on the same tokens."""

from __future__ import annotations

import numpy as np
import pytest
from llama_cpp import Llama

from experiments.shared.llamacpp import llamacpp_quantize
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


def tensor_types(path) -> dict[str, str]:
    from gguf import GGUFReader

    return {t.name: t.tensor_type.name.lower() for t in GGUFReader(path).tensors}


#: 16 layers of width 256 so that K-quant rows fit: use_more_bits picks layers 0, 1, 4, 7, 10, 13, 14, 15 and the
#: first sixteenth and eighth differ; 2 query heads per KV head, then 4 (Q2_K raises attn_v by that ratio); the
#: tied qwen2 shape's 128-wide rows exercise llama.cpp's fallbacks (Q4_K to Q5_0, Q6_K to Q8_0, Q2_K to Q4_0).
RECIPE_SHAPES = {"llama, 16 layers, gqa 2": ModelShape("llama", 256, 16, 4, 2, 512, 512, context=512),
                 "llama, 16 layers, gqa 4": ModelShape("llama", 256, 16, 8, 2, 512, 512, context=512),
                 "qwen2, tied, 128 wide": PRESETS["tiny-qwen2"]}


@pytest.mark.parametrize("label", list(RECIPE_SHAPES))
def test_every_file_type_stores_each_tensor_in_the_type_llamacpp_chooses(tmp_path, label):
    """Each of llama-quantize's file types we write, with its recipe and with --pure: our plan (what the writer and
    the requantizer store) against the file llama.cpp's quantizer writes from the same f32 model."""
    from infer_core.model.gguf_io import WEIGHT_TYPES, file_plan
    from infer_core.model.recipes import FILE_TYPES

    shape = RECIPE_SHAPES[label]
    src = write_gguf(tmp_path / "f32.gguf", shape, "f32", seed=0)
    kinds = set()
    for weights in WEIGHT_TYPES:
        for pure in (False, True):
            llamacpp_quantize(src, tmp_path / "theirs.gguf", FILE_TYPES[weights].ftype, pure)
            ours = {t.name: t.kind for t in file_plan(shape, weights, pure)}
            assert ours == tensor_types(tmp_path / "theirs.gguf"), (weights, pure)
            kinds |= set(ours.values())
    assert {"q6_k", "q8_0"} <= kinds  # the recipes raise tensors above their file type's base type


def test_a_requantized_file_has_llamacpps_types_and_the_sources_metadata(tmp_path):
    """A q4_1 source (the real model's own type) requantized into q4_k_m, as llama-quantize --allow-requantize: every
    tensor of llama.cpp's type, the metadata copied (but the file type), a tensor already of its type (the norms) copied
    byte for byte, and llama.cpp's logits on our file close to those on its own (both dequantize the same source)."""
    from gguf import GGUFReader

    from infer_core.model.requantize import requantize_gguf

    shape = RECIPE_SHAPES["llama, 16 layers, gqa 2"]
    src = write_gguf(tmp_path / "src.gguf", shape, "q4_1", seed=0)
    ours = requantize_gguf(src, tmp_path / "ours.gguf", "q4_k_m", threads=2)
    llamacpp_quantize(src, tmp_path / "theirs.gguf", 15)  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert tensor_types(ours) == tensor_types(tmp_path / "theirs.gguf")
    a, b = GGUFReader(src), GGUFReader(ours)
    fields = {k: f.contents() for k, f in a.fields.items() if not k.startswith("GGUF.") and k != "general.file_type"}
    assert fields == {k: f.contents() for k, f in b.fields.items() if k in fields}
    assert b.fields["general.file_type"].contents() == 15
    norms = {t.name: np.asarray(t.data) for t in a.tensors if t.name.endswith("norm.weight")}
    assert len(norms) == 2 * shape.n_layers + 1
    assert all(np.array_equal(np.asarray(t.data), norms[t.name]) for t in b.tensors if t.name in norms)
    tokens = [int(t) for t in np.random.default_rng(4).integers(3, shape.n_vocab, 64)]
    mine, theirs = both(ours, tokens)[1], both(tmp_path / "theirs.gguf", tokens)[1]
    assert (mine.argmax(axis=1) == theirs.argmax(axis=1)).mean() >= 0.9


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
