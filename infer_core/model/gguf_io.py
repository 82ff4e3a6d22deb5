"""GGUF model files: write a seeded random model of a shape (:func:`write_gguf`), read any Llama-family
GGUF back into the NumPy reference (:func:`load_gguf`).

The file holds llama.cpp's architecture metadata, a made-up vocabulary of the right size (the
256 byte tokens, ``<unk>``, ``<s>``, ``</s>``, then fillers; no text quality is claimed), and the
tensors. Norms and biases stay float32; each matrix is stored in the type llama-quantize gives it in
the chosen file type (:mod:`~infer_core.model.recipes`). A real model is requantized by
:mod:`~infer_core.model.requantize`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter, TokenType, quants

from infer_core.measure.files import atomic_path
from infer_core.model.forward import Model
from infer_core.model.recipes import FILE_TYPES, tensor_type
from infer_core.model.shapes import ARCHITECTURES, ModelShape
from infer_core.model.weights import iter_weights, tensor_shapes
from infer_core.quant import GGUF_FORMATS, dequantize_gguf, quantize_gguf

WEIGHT_TYPES = tuple(FILE_TYPES)
BYTE_TOKENS = 256


def vocabulary(n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and types: ``<unk>`` ``<s>`` ``</s>``, the byte tokens ``<0x00>``..``<0xFF>``, fillers."""
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(BYTE_TOKENS))]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL, *[TokenType.BYTE] * BYTE_TOKENS]
    tokens += [f"tok{i}" for i in range(n_vocab - len(tokens))]
    types += [TokenType.NORMAL] * (n_vocab - len(types))
    return tokens, [0.0] * 3 + [-1.0] * (n_vocab - 3), [int(t) for t in types]


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


def check_weights(weights: str) -> None:
    """ValueError unless ``weights`` is one of llama-quantize's file types written here."""
    if weights not in WEIGHT_TYPES:
        raise ValueError(f"weights={weights!r} must be one of {', '.join(WEIGHT_TYPES)}")


def file_plan(shape: ModelShape, weights: str, pure: bool = False) -> list[StoredTensor]:
    """Every tensor of the file for ``shape`` stored as llama-quantize's file type ``weights`` (its recipe, or
    every matrix in its default type when ``pure``), in file order (norms and biases stay float32)."""
    check_weights(weights)
    gqa = shape.n_heads // shape.n_kv_heads
    return [StoredTensor.planned(name, dims, tensor_type(name, dims, weights, shape.n_layers, gqa,
                                                         shape.tied_embeddings, pure))
            for name, dims in tensor_shapes(shape).items()]


def bits_per_weight(tensors: list[StoredTensor]) -> float:
    """Bits of tensor data per weight (norms and biases included)."""
    return 8 * sum(t.nbytes for t in tensors) / sum(t.n_weights for t in tensors)


def encode_tensor(w: np.ndarray, kind: str, threads: int) -> np.ndarray:
    """float32 values stored as ``kind``: float32, float16, or GGUF block bytes (on ``threads`` threads)."""
    if kind in ("f32", "f16"):
        return w.astype(np.float32 if kind == "f32" else np.float16, copy=False)
    return quantize_gguf(w, kind, threads)


def write_tensors(w: GGUFWriter, plan: list[StoredTensor], data: Iterable[np.ndarray],
                  progress: Progress | None = None) -> None:
    """The tensors of ``plan`` into ``w`` (its metadata added already): their infos, the header, then each tensor's
    bytes from ``data`` (one array at a time, in plan order), calling ``progress`` after each."""
    for t in plan:
        if t.kind in ("f32", "f16"):  # gguf takes these types from the dtype
            w.add_tensor_info(t.name, t.dims, np.dtype(np.float32 if t.kind == "f32" else np.float16), t.nbytes)
        else:
            raw = (*t.dims[:-1], t.nbytes // int(np.prod(t.dims[:-1])))  # bytes per row
            w.add_tensor_info(t.name, raw, np.dtype(np.uint8), t.nbytes, GGMLQuantizationType[t.kind.upper()])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    done, total = 0, sum(t.nbytes for t in plan)
    for t, array in zip(plan, data, strict=True):
        if array.nbytes != t.nbytes:
            raise ValueError(f"{t.name}: {array.nbytes} bytes to write, {t.nbytes} planned")
        w.write_tensor_data(array)
        done += array.nbytes
        if progress is not None:
            progress(done, total)


def write_gguf(path: str | Path, shape: ModelShape, weights: str = "f32", seed: int = 0, threads: int = 1,
               progress: Progress | None = None, pure: bool = False) -> Path:
    """Write the model of ``shape`` with weights from ``seed`` stored as llama-quantize's file type ``weights``
    (``f32``, ``f16``, ``q8_0``, ``q4_k_m``, …; see :mod:`~infer_core.model.recipes`), atomically; returns the path.

    Tensors are made, quantized (on ``threads`` threads) and written one at a time, so memory holds
    one tensor, whatever the model's size; ``progress`` is called after each.
    """
    plan = file_plan(shape, weights, pure)
    path = Path(path)
    with atomic_path(path) as tmp:
        w = GGUFWriter(str(tmp), shape.arch)
        w.add_file_type(FILE_TYPES[weights].ftype)
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
        write_tensors(w, plan, (encode_tensor(tensor, t.kind, threads) for t, (_, tensor) in
                                zip(plan, iter_weights(shape, seed, threads), strict=True)), progress)
        w.close()
    return path


def _field(reader: GGUFReader, key: str) -> object:
    f = reader.fields.get(key)
    if f is None:
        return None
    return f.contents()


#: Readers of the files read last, by (path, size, modification time), newest last.
_readers: dict[tuple, GGUFReader] = {}
KEPT_READERS = 4


def gguf_reader(path: Path) -> GGUFReader:
    """gguf's reader of ``path``; the last few are kept while their files are unchanged (parsing a 49,152-token
    vocabulary takes 3-4 s, and a point reads a source and its requantized copy, shapes before weights)."""
    path = Path(path)
    stat = path.stat() if path.exists() else None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns) if stat else None
    if key is not None and key in _readers:
        _readers[key] = _readers.pop(key)  # now the newest
        return _readers[key]
    try:
        reader = GGUFReader(path)
        if key is not None:
            _readers[key] = reader
            while len(_readers) > KEPT_READERS:
                _readers.pop(next(iter(_readers)))
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
    return checked_shape(gguf_reader(path), path)


def checked_shape(reader: GGUFReader, path: Path) -> tuple[ModelShape, list[StoredTensor]]:
    """The shape and stored tensors ``reader`` holds; ValueError naming ``path`` for a file that is foreign,
    lacks a tensor of its shape or is cut short."""
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
    reader = gguf_reader(path)
    shape, _ = checked_shape(reader, path)
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
