"""Whole models: the reference forward (full pass = KV-cache decode), rotary layouts, GGUF files written
and read back (ours and one built with gguf's own writer), peaked distributions, bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from gguf import GGUFWriter

from infer_core.model import PRESETS, Model, init_weights, load_gguf, shape_of, tensor_shapes, write_gguf
from infer_core.model.fidelity import Agreement, Divergence, entropy
from infer_core.model.forward import rope
from infer_core.model.gguf_io import file_plan, read_gguf, vocabulary
from infer_core.model.store import cached_gguf
from infer_core.quant import dequantize_gguf, quantize_gguf


def reference(name: str, dtype=np.float64) -> Model:
    shape = PRESETS[name]
    return Model(shape, {k: v.astype(dtype) for k, v in init_weights(shape, 0).items()})


@pytest.mark.parametrize("name", ["tiny", "tiny-qwen2"])
def test_a_full_pass_equals_decoding_token_by_token(name):
    model = reference(name)
    tokens = np.random.default_rng(1).integers(0, model.shape.n_vocab, 40)
    full = model.logits(tokens)
    model.reset()
    steps = np.concatenate([model.decode(tokens[:9]), *(model.decode(tokens[i : i + 1]) for i in range(9, 40))])
    assert full.shape == (40, model.shape.n_vocab) and model.n_cached == 40
    np.testing.assert_allclose(steps, full, rtol=0, atol=1e-12 * np.abs(full).max())
    model.rewind(20)  # as after the first 20 tokens: the rest decodes to the same logits
    np.testing.assert_allclose(model.decode(tokens[20:]), full[20:], rtol=0, atol=1e-12 * np.abs(full).max())
    with pytest.raises(ValueError, match="holds 40 tokens"):
        model.rewind(41)


@pytest.mark.parametrize("name", ["tiny", "tiny-qwen2"])
def test_fused_products_compute_the_same_logits(name):
    model = reference(name)
    tokens = np.random.default_rng(2).integers(0, model.shape.n_vocab, 20)
    expected = model.logits(tokens)
    fused = model.fuse()
    assert "blk.0.attn_qkv.weight" in fused.weights and "blk.0.attn_q.weight" not in fused.weights
    assert ("blk.1.attn_qkv.bias" in fused.weights) == fused.shape.qkv_bias
    np.testing.assert_allclose(fused.logits(tokens), expected, rtol=0, atol=1e-12 * np.abs(expected).max())


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
        assert 0.05 * np.log(model.shape.n_vocab) < entropy < 0.4 * np.log(model.shape.n_vocab), (name, entropy)
        tokens = np.random.default_rng(2).integers(0, model.shape.n_vocab, 64)
        assert (logits.argmax(axis=1) == tokens).mean() < 0.2, name  # not a model that repeats its input


@pytest.mark.parametrize("weights", ["f32", "f16", "q8_0", "q4_0", "q6_k"])
def test_a_written_file_reads_back_as_the_weights_it_stores(tmp_path, weights):
    shape = PRESETS["tiny"]
    model = load_gguf(write_gguf(tmp_path / "m.gguf", shape, weights, seed=3))
    assert model.shape == shape.__class__(**{**shape.__dict__, "norm_eps": model.shape.norm_eps})
    assert model.shape.norm_eps == pytest.approx(shape.norm_eps, rel=1e-6)  # stored as float32
    kinds = {t.name: t.kind for t in file_plan(shape, weights)}  # llama-quantize's recipe (tested in test_engine_*)
    assert set(kinds.values()) - {"f32"} <= {weights, "q6_k", "q8_0"}  # the output raised, fallbacks to Q8_0
    for name, w in init_weights(shape, 3).items():
        kind = kinds[name]
        if kind == "f32":
            expected = w
        elif kind == "f16":
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
    with pytest.raises(ValueError, match="exceed the context of 2048"):
        load_gguf(good).logits(np.zeros(2049, int))
    tail_cut = tmp_path / "tail.gguf"  # the header reads; the last tensor's data is missing
    tail_cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ValueError, match=f"{tail_cut} is (truncated|not a readable GGUF file)"):
        read_gguf(tail_cut)


def test_tensor_names_and_counts_follow_the_published_shapes():
    s = shape_of("tinyllama-1.1b")
    names = tensor_shapes(s)
    assert len(names) == 3 + 9 * 22 and names["blk.0.attn_k.weight"] == (256, 2048)
    assert s.n_params == 1_100_048_384  # TinyLlama-1.1B's parameter count
    assert "output.weight" not in tensor_shapes(shape_of("qwen2.5-0.5b"))  # tied embeddings


def test_kl_divergence_statistics_by_hand():
    base = np.log(np.array([[0.5, 0.5], [0.9, 0.1], [0.25, 0.75]]))
    other = np.log(np.array([[0.9, 0.1], [0.9, 0.1], [0.75, 0.25]]))
    kld = [0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1), 0.0, 0.25 * np.log(1 / 3) + 0.75 * np.log(3)]
    d = Divergence.of(base + 3.0, other - 1.0)  # logits: shifts do not change a distribution
    assert d.mean_kld == pytest.approx(np.mean(kld), rel=1e-12) and d.max_kld == pytest.approx(max(kld), rel=1e-12)
    assert d.median_kld == pytest.approx(np.median(kld), rel=1e-12)
    assert d.p99_kld == pytest.approx(np.percentile(kld, 99), rel=1e-12)
    assert d.same_top == pytest.approx(2 / 3)  # row 0: a tie in base goes to index 0, as does 0.9 in other
    np.testing.assert_allclose(entropy(np.log(np.full((1, 8), 1 / 8))), [np.log(8)], rtol=1e-12)
    a = Agreement.of(np.array([[1.0, 4.0], [2.0, 0.0]]), np.array([[1.5, 4.0], [-1.0, 0.0]]))
    assert (a.max_abs_diff, a.max_rel_diff, a.top1_agreement) == (3.0, 0.75, 0.5)


def test_cached_models_are_written_once_and_keyed_by_everything_that_shapes_them(tmp_path):
    shape = PRESETS["tiny"]
    seen = []
    path, reused = cached_gguf(tmp_path, "tiny", shape, "q8_0", 0, progress=lambda *args: seen.append(args))
    assert not reused and path.name.startswith("tiny-q8_0-seed0-")
    total = sum(t.nbytes for t in file_plan(shape, "q8_0"))
    assert len(seen) == len(tensor_shapes(shape)) and seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert cached_gguf(tmp_path, "tiny", shape, "q8_0", 0) == (path, True)
    wider = dataclasses.replace(shape, d_ffn=512)
    others = {cached_gguf(tmp_path, "tiny", wider, "q8_0", 0)[0], cached_gguf(tmp_path, "tiny", shape, "q8_0", 1)[0],
              cached_gguf(tmp_path, "tiny", shape, "q4_0", 0)[0]}
    assert len(others) == 3 and path not in others
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in [path, *others])  # no leftovers


def test_weights_do_not_depend_on_the_thread_count():
    shape = PRESETS["tiny-qwen2"]
    one, two = init_weights(shape, 3), init_weights(shape, 3, threads=2)
    assert all(np.array_equal(one[k], two[k]) for k in one) and one.keys() == two.keys()
    assert not np.array_equal(one["blk.0.attn_q.weight"], init_weights(shape, 4)["blk.0.attn_q.weight"])
