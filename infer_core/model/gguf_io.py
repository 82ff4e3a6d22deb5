"""GGUF model files: write a seeded random model of a shape (:func:`write_gguf`), read any Llama-family
GGUF back into the NumPy reference (:func:`load_gguf`).

The file holds llama.cpp's architecture metadata, a made-up vocabulary of the right size (the
256 byte tokens, ``<unk>``, ``<s>``, ``</s>``, then fillers; no text quality is claimed), and the
tensors. Norms and biases stay float32; every matrix is stored in the chosen type. The mixes
``q4_k_m`` and ``q5_k_m`` choose a type per tensor as llama.cpp's quantizer does
(``llama_tensor_get_type_impl`` in its ``src/llama-quant.cpp``): Q6_K for ``output.weight`` (and
the embedding when tied), and for ``attn_v`` and ``ffn_down`` of the layers ``use_more_bits``
picks; the base K-quant elsewhere. A matrix whose rows are not whole blocks of its type falls back
as llama.cpp's ``tensor_type_fallback`` does: Q2_K/Q3_K to Q4_0, Q4_K to Q5_0, Q5_K to Q5_1, Q6_K
to Q8_0, and to F16 when even 32-value blocks do not fit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter, TokenType, quants

from infer_core.files import atomic_path
from infer_core.model.forward import Model
from infer_core.model.shapes import ARCHITECTURES, ModelShape
from infer_core.model.weights import init_weights
from infer_core.quant import GGUF_FORMATS, quantize_gguf

MIXES = {"q4_k_m": "q4_k", "q5_k_m": "q5_k"}  # llama.cpp's LLAMA_FTYPE_MOSTLY_Q4_K_M (15), Q5_K_M (17)
WEIGHT_TYPES = ("f32", "f16", *GGUF_FORMATS, *MIXES)
BYTE_TOKENS = 256
FALLBACK = {"q2_k": "q4_0", "q3_k": "q4_0", "q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0"}


def use_more_bits(layer: int, n_layers: int) -> bool:
    """llama.cpp's choice of the layers that get more bits in its _M mixes: the first and last
    eighth, and every third layer between."""
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def tensor_type(name: str, cols: int, weights: str, shape: ModelShape) -> str:
    """The type a matrix of ``cols`` columns is stored in, for ``weights`` (a type or a mix)."""
    kind = MIXES.get(weights, weights)
    if weights in MIXES:
        if name == "output.weight" or (shape.tied_embeddings and name == "token_embd.weight"):
            kind = "q6_k" if cols % 256 == 0 else "q8_0"
        elif name.endswith((".attn_v.weight", ".ffn_down.weight")) and use_more_bits(int(name.split(".")[1]),
                                                                                      shape.n_layers):
            kind = "q6_k"
    fmt = GGUF_FORMATS.get(kind)
    if fmt is not None and cols % fmt.block:
        kind = FALLBACK.get(kind, "f16")
        if kind != "f16" and cols % GGUF_FORMATS[kind].block:
            kind = "f16"
    return kind


def vocabulary(n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and types: ``<unk>`` ``<s>`` ``</s>``, the byte tokens ``<0x00>``..``<0xFF>``, fillers."""
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(BYTE_TOKENS))]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL, *[TokenType.BYTE] * BYTE_TOKENS]
    tokens += [f"tok{i}" for i in range(n_vocab - len(tokens))]
    types += [TokenType.NORMAL] * (n_vocab - len(types))
    return tokens, [0.0] * 3 + [-1.0] * (n_vocab - 3), [int(t) for t in types]


def _stored(name: str, w: np.ndarray, weights: str, shape: ModelShape) -> tuple[np.ndarray, GGMLQuantizationType]:
    kind = "f32" if w.ndim == 1 else tensor_type(name, w.shape[-1], weights, shape)
    if kind in ("f32", "f16"):
        return w.astype(np.float32 if kind == "f32" else np.float16), GGMLQuantizationType[kind.upper()]
    return quantize_gguf(w, kind), GGMLQuantizationType[kind.upper()]


def write_gguf(path: str | Path, shape: ModelShape, weights: str = "f32", seed: int = 0) -> Path:
    """Write the model of ``shape`` with weights from ``seed`` stored as ``weights`` (f32, f16, a GGUF
    block format or a mix, ``q4_k_m`` or ``q5_k_m``), atomically; returns the path."""
    if weights not in WEIGHT_TYPES:
        raise ValueError(f"weights={weights!r} must be one of {', '.join(WEIGHT_TYPES)}")
    path = Path(path)
    with atomic_path(path) as tmp:
        w = GGUFWriter(str(tmp), shape.arch)
        w.add_context_length(shape.context)
        w.add_embedding_length(shape.d_model)
        w.add_block_count(shape.n_layers)
        w.add_feed_forward_length(shape.d_ffn)
        w.add_head_count(shape.n_heads)
        w.add_head_count_kv(shape.n_kv_heads)
        w.add_layer_norm_rms_eps(shape.norm_eps)
        w.add_rope_freq_base(shape.rope_theta)
        w.add_rope_dimension_count(shape.d_head)
        w.add_vocab_size(shape.n_vocab)
        tokens, scores, types = vocabulary(shape.n_vocab)
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_unk_token_id(0)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        for name, tensor in init_weights(shape, seed).items():
            data, kind = _stored(name, tensor, weights, shape)
            plain = kind in (GGMLQuantizationType.F32, GGMLQuantizationType.F16)  # gguf reads these from the dtype
            w.add_tensor(name, data, raw_dtype=None if plain else kind)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path


def _field(reader: GGUFReader, key: str) -> object:
    f = reader.fields.get(key)
    if f is None:
        return None
    return f.contents()


def load_gguf(path: str | Path, dtype: str = "float32") -> Model:
    """A GGUF model of an architecture in ``ARCHITECTURES`` (written here or not), its weights
    dequantized into ``dtype``. A truncated file, another architecture or a missing tensor raises
    ValueError naming the file."""
    path = Path(path)
    try:
        reader = GGUFReader(path)
    except (OSError, ValueError, IndexError, KeyError) as exc:  # gguf's reader fails on a cut file
        raise ValueError(f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc})") from None
    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(f"{path} holds architecture {arch!r}; this reference runs {', '.join(ARCHITECTURES)}")
    tokens = _field(reader, "tokenizer.ggml.tokens")

    def meta(key: str, default: object = None) -> object:
        value = _field(reader, f"{arch}.{key}")
        return default if value is None else value

    names = {t.name for t in reader.tensors}
    shape = ModelShape(
        arch=str(arch), d_model=int(meta("embedding_length")), n_layers=int(meta("block_count")),
        n_heads=int(meta("attention.head_count")), n_kv_heads=int(meta("attention.head_count_kv")),
        d_ffn=int(meta("feed_forward_length")), n_vocab=len(tokens) if tokens else int(meta("vocab_size")),
        tied_embeddings="output.weight" not in names, rope_theta=float(meta("rope.freq_base", 10000.0)),
        norm_eps=float(meta("attention.layer_norm_rms_epsilon")), context=int(meta("context_length")))
    weights = {}
    for t in reader.tensors:
        values = quants.dequantize(t.data, t.tensor_type)
        weights[t.name] = np.asarray(values, dtype=dtype).reshape(tuple(int(n) for n in reversed(t.shape)))
    return Model(shape, weights)
