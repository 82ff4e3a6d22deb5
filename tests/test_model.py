"""Whole models: the reference forward (full pass = KV-cache decode), rotary layouts, GGUF files written
and read back (ours and one built with gguf's own writer), peaked distributions, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGUFWriter

from infer_core.model import PRESETS, Model, init_weights, load_gguf, shape_of, tensor_shapes, write_gguf
from infer_core.model.forward import rope
from infer_core.model.gguf_io import vocabulary
from infer_core.quant import GGUF_FORMATS, dequantize_gguf, quantize_gguf


def reference(name: str, dtype=np.float64) -> Model:
    shape = PRESETS[name]
    return Model(shape, {k: v.astype(dtype) for k, v in init_weights(shape, 0).items()})


@pytest.mark.parametrize("name", ["tiny", "tiny-qwen2"])
def test_a_full_pass_equals_decoding_token_by_token(name):
    model = reference(name)
    tokens = np.random.default_rng(1).integers(0, model.shape.n_vocab, 40)
    full = model.logits(tokens)
    model.cache = []
    steps = np.concatenate([model.decode(tokens[:9]), *(model.decode(tokens[i : i + 1]) for i in range(9, 40))])
    assert full.shape == (40, model.shape.n_vocab)
    np.testing.assert_allclose(steps, full, rtol=0, atol=1e-12 * np.abs(full).max())


@pytest.mark.parametrize("neox", [False, True])
def test_rope_turns_the_right_pairs_by_position_times_frequency(neox):
    d = 8
    x = np.zeros((1, 1, d))
    x[0, 0, 0] = 1.0  # first dimension of the first pair
    got = rope(x, np.array([3]), theta=10000.0, neox=neox)[0, 0]
    partner = d // 2 if neox else 1  # llama: (0, 1); qwen2 (NEOX): (0, d/2)
    expected = np.zeros(d)
    expected[0], expected[partner] = np.cos(3.0), np.sin(3.0)  # pair 0 turns by 3 · theta^0
    np.testing.assert_allclose(got, expected, atol=1e-15)
    first, second = (1, 1 + d // 2) if neox else (2, 3)  # the second pair
    y = np.zeros((1, 1, d))
    y[0, 0, first] = 1.0  # it turns by 3 · theta^(-2/d)
    angle = 3.0 * 10000.0 ** (-2 / d)
    out = rope(y, np.array([3]), theta=10000.0, neox=neox)[0, 0]
    assert out[first] == pytest.approx(np.cos(angle)) and out[second] == pytest.approx(np.sin(angle))


def test_next_token_distributions_are_peaked():
    for name in ("tiny", "tiny-qwen2"):
        model = reference(name)
        logits = model.logits(np.random.default_rng(2).integers(0, model.shape.n_vocab, 64))
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        entropy = float(-(p * np.log(np.where(p > 0, p, 1))).sum(axis=1).mean())
        assert entropy < 0.4 * np.log(model.shape.n_vocab), (name, entropy)


@pytest.mark.parametrize("weights", ["f32", "f16", "q8_0", "q4_0", "q6_k"])
def test_a_written_file_reads_back_as_the_weights_it_stores(tmp_path, weights):
    shape = PRESETS["tiny"]
    model = load_gguf(write_gguf(tmp_path / "m.gguf", shape, weights, seed=3))
    assert model.shape == shape.__class__(**{**shape.__dict__, "norm_eps": model.shape.norm_eps})
    assert model.shape.norm_eps == pytest.approx(shape.norm_eps, rel=1e-6)  # stored as float32
    block = GGUF_FORMATS[weights].block if weights in GGUF_FORMATS else 1
    for name, w in init_weights(shape, 3).items():
        kind = "q8_0" if weights == "q6_k" and w.shape[-1] % block else weights  # llama.cpp's fallback for Q6_K
        if w.ndim == 1 or weights == "f32":
            expected = w
        elif weights == "f16":
            expected = w.astype(np.float16).astype(np.float32)
        else:
            expected = dequantize_gguf(quantize_gguf(w, kind), kind)
        np.testing.assert_array_equal(model.weights[name], expected, err_msg=name)


def test_a_file_from_ggufs_own_writer_is_read(tmp_path):
    """A GGUF file that gguf's GGUFWriter builds here (not our writer) loads and runs the same model."""
    shape = PRESETS["tiny-qwen2"]
    weights = init_weights(shape, 5)
    path = tmp_path / "other.gguf"
    w = GGUFWriter(str(path), "qwen2")
    for key, value in (("context_length", 512), ("embedding_length", 128), ("block_count", 2),
                       ("feed_forward_length", 256), ("head_count", 4), ("head_count_kv", 2)):
        getattr(w, f"add_{key}")(value)
    w.add_layer_norm_rms_eps(shape.norm_eps)
    w.add_rope_freq_base(shape.rope_theta)
    w.add_token_list(vocabulary(shape.n_vocab)[0])
    for name, tensor in weights.items():
        w.add_tensor(name, tensor)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    loaded = load_gguf(path)
    assert loaded.shape.tied_embeddings and loaded.shape.qkv_bias and loaded.shape.arch == "qwen2"
    tokens = np.arange(0, 500, 37)
    expected = Model(shape, weights).logits(tokens)
    np.testing.assert_allclose(loaded.logits(tokens), expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_bad_input_is_one_clear_line(tmp_path):
    with pytest.raises(ValueError, match="model='gpt-5' is not a known shape: choose one of tiny"):
        shape_of("gpt-5")
    with pytest.raises(ValueError, match="weights='q7_0' must be one of f32, f16, q8_0"):
        write_gguf(tmp_path / "x.gguf", PRESETS["tiny"], "q7_0")
    good = write_gguf(tmp_path / "m.gguf", PRESETS["tiny"])
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(ValueError, match=f"{cut} is not a readable GGUF file"):
        load_gguf(cut)
    other = tmp_path / "gpt2.gguf"
    w = GGUFWriter(str(other), "gpt2")
    w.add_tensor("x", np.zeros(4, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="holds architecture 'gpt2'; this reference runs llama, qwen2"):
        load_gguf(other)
    with pytest.raises(ValueError, match="exceed the context of 512"):
        load_gguf(good).logits(np.zeros(513, int))


def test_tensor_names_and_counts_follow_the_published_shapes():
    s = shape_of("tinyllama-1.1b")
    names = tensor_shapes(s)
    assert len(names) == 3 + 9 * 22 and names["blk.0.attn_k.weight"] == (256, 2048)
    assert s.n_params == 1_100_048_384  # TinyLlama-1.1B's parameter count
    assert "output.weight" not in tensor_shapes(shape_of("qwen2.5-0.5b"))  # tied embeddings
