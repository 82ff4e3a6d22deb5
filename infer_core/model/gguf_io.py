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

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter, TokenType, quants

from infer_core.measure.files import atomic_path
from infer_core.model.forward import Model
from infer_core.model.shapes import ARCHITECTURES, ModelShape
from infer_core.model.weights import iter_weights, tensor_shapes
from infer_core.quant import GGUF_FORMATS, dequantize_gguf, quantize_gguf

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


#: llama.cpp's ``llama_ftype`` of each weights choice (``general.file_type``; its loader names the mix by it).
FILE_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q2_k": 10, "q3_k": 12,
              "q4_k": 14, "q4_k_m": 15, "q5_k": 16, "q5_k_m": 17, "q6_k": 18}
#: Called after each tensor is written with (bytes written, bytes in all tensors).
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class StoredTensor:
    """One tensor as a file stores it: GGUF name, (out, in) shape, type, bytes."""

    name: str
    dims: tuple[int, ...]
    kind: str  # f32, f16 or a GGUF block format (lower case, as gguf names it)
    nbytes: int

    @classmethod
    def planned(cls, name: str, dims: tuple[int, ...], kind: str) -> StoredTensor:
        count = int(np.prod(dims))
        if kind in ("f32", "f16"):
            return cls(name, dims, kind, count * (4 if kind == "f32" else 2))
        fmt = GGUF_FORMATS[kind]
        return cls(name, dims, kind, count // fmt.block * fmt.type_size)

    @property
    def n_weights(self) -> int:
        return int(np.prod(self.dims))


def file_plan(shape: ModelShape, weights: str) -> list[StoredTensor]:
    """Every tensor of the file for ``shape`` stored as ``weights``, in file order (norms and biases
    stay float32)."""
    if weights not in WEIGHT_TYPES:
        raise ValueError(f"weights={weights!r} must be one of {', '.join(WEIGHT_TYPES)}")
    return [StoredTensor.planned(name, dims, "f32" if len(dims) == 1 else tensor_type(name, dims[-1], weights, shape))
            for name, dims in tensor_shapes(shape).items()]


def bits_per_weight(tensors: list[StoredTensor]) -> float:
    """Bits of tensor data per weight (norms and biases included)."""
    return 8 * sum(t.nbytes for t in tensors) / sum(t.n_weights for t in tensors)


def _encode(w: np.ndarray, kind: str, threads: int) -> np.ndarray:
    if kind in ("f32", "f16"):
        return w.astype(np.float32 if kind == "f32" else np.float16, copy=False)
    return quantize_gguf(w, kind, threads)


def write_gguf(path: str | Path, shape: ModelShape, weights: str = "f32", seed: int = 0, threads: int = 1,
               progress: Progress | None = None) -> Path:
    """Write the model of ``shape`` with weights from ``seed`` stored as ``weights`` (f32, f16, a GGUF
    block format or a mix, ``q4_k_m`` or ``q5_k_m``), atomically; returns the path.

    Tensors are made, quantized (on ``threads`` threads) and written one at a time, so memory holds
    one tensor, whatever the model's size; ``progress`` is called after each.
    """
    plan = file_plan(shape, weights)
    total = sum(t.nbytes for t in plan)
    path = Path(path)
    with atomic_path(path) as tmp:
        w = GGUFWriter(str(tmp), shape.arch)
        w.add_file_type(FILE_TYPES[weights])
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
        for t in plan:
            if t.kind in ("f32", "f16"):  # gguf takes these types from the dtype
                w.add_tensor_info(t.name, t.dims, np.dtype(np.float32 if t.kind == "f32" else np.float16), t.nbytes)
            else:
                raw = (*t.dims[:-1], t.nbytes // int(np.prod(t.dims[:-1])))  # bytes per row
                w.add_tensor_info(t.name, raw, np.dtype(np.uint8), t.nbytes, GGMLQuantizationType[t.kind.upper()])
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        done = 0
        for t, (name, tensor) in zip(plan, iter_weights(shape, seed, threads), strict=True):
            assert name == t.name
            data = _encode(tensor, t.kind, threads)
            w.write_tensor_data(data)
            done += data.nbytes
            if progress is not None:
                progress(done, total)
        w.close()
    return path


def _field(reader: GGUFReader, key: str) -> object:
    f = reader.fields.get(key)
    if f is None:
        return None
    return f.contents()


_last_reader: list = [None, None]


def _reader(path: Path) -> GGUFReader:
    """gguf's reader of ``path``; the last one is kept while the file is unchanged (parsing a 32000-token
    vocabulary takes seconds, and a shape is often read before the weights)."""
    stat = path.stat() if path.exists() else None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns) if stat else None
    if key is not None and _last_reader[0] == key:
        return _last_reader[1]
    try:
        reader = GGUFReader(path)
        _last_reader[:] = [key, reader]
        return reader
    except (OSError, ValueError, IndexError, KeyError) as exc:  # gguf's reader fails on a cut file
        raise ValueError(f"{path} is not a readable GGUF file: truncated or damaged ({type(exc).__name__}: {exc})"
                         ) from None


def _shape(reader: GGUFReader, path: Path) -> ModelShape:
    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(f"{path} holds architecture {arch!r}; this reference runs {', '.join(ARCHITECTURES)}")
    tokens = _field(reader, "tokenizer.ggml.tokens")

    def meta(key: str, default: object = None) -> object:
        value = _field(reader, f"{arch}.{key}")
        if value is None and default is None:
            raise ValueError(f"{path} lacks the metadata {arch}.{key}")
        return default if value is None else value

    names = {t.name for t in reader.tensors}
    return ModelShape(
        arch=str(arch), d_model=int(meta("embedding_length")), n_layers=int(meta("block_count")),
        n_heads=int(meta("attention.head_count")), n_kv_heads=int(meta("attention.head_count_kv")),
        d_ffn=int(meta("feed_forward_length")), n_vocab=len(tokens) if tokens else int(meta("vocab_size")),
        tied_embeddings="output.weight" not in names, rope_theta=float(meta("rope.freq_base", 10000.0)),
        norm_eps=float(meta("attention.layer_norm_rms_epsilon")), context=int(meta("context_length")))


def read_gguf(path: str | Path) -> tuple[ModelShape, list[StoredTensor]]:
    """The shape and the stored tensors of a GGUF model file, without reading the weights. A file that
    is truncated, of another architecture, or lacks a tensor of its shape raises ValueError naming it."""
    path = Path(path)
    return _read(_reader(path), path)


def _read(reader: GGUFReader, path: Path) -> tuple[ModelShape, list[StoredTensor]]:
    shape = _shape(reader, path)
    stored = [StoredTensor(t.name, tuple(int(n) for n in reversed(t.shape)), t.tensor_type.name.lower(),
                           int(t.n_bytes)) for t in reader.tensors]
    missing = sorted(set(tensor_shapes(shape)) - {t.name for t in stored})
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} tensor(s) of its shape, first {missing[0]}")
    end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    if path.stat().st_size < end:
        raise ValueError(f"{path} is truncated: {path.stat().st_size} bytes, its tensors need {end}")
    return shape, stored


def load_gguf(path: str | Path, dtype: str = "float32", threads: int = 1) -> Model:
    """A GGUF model of an architecture in ``ARCHITECTURES`` (written here or not), its weights
    dequantized into ``dtype`` (on ``threads`` threads). A truncated file, another architecture or a
    missing tensor raises ValueError naming the file."""
    path = Path(path)
    reader = _reader(path)
    shape, _ = _read(reader, path)
    weights = {}
    for t in reader.tensors:
        kind = t.tensor_type.name.lower()
        dims = tuple(int(n) for n in reversed(t.shape))
        if kind in GGUF_FORMATS:  # ours decodes as gguf does (tested), several times faster
            values = dequantize_gguf(np.asarray(t.data).reshape((*dims[:-1], -1)), kind, threads)
        else:
            values = quants.dequantize(t.data, t.tensor_type)
        weights[t.name] = np.asarray(values, dtype=dtype).reshape(dims)
    return Model(shape, weights)
