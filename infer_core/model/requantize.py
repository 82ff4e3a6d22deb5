"""Requantize a GGUF model file as ``llama-quantize --allow-requantize`` does: each matrix is dequantized to
float32 and quantized again by our quantizers into the type llama-quantize's recipe gives it
(:mod:`~infer_core.model.recipes`); a tensor already of its type, and every norm and bias, is copied byte for
byte; the metadata (tokenizer, chat template, hyperparameters) is copied, with the new ``general.file_type``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFValueType, GGUFWriter, ReaderTensor, quants

from infer_core.measure.files import atomic_path
from infer_core.model.gguf_io import (
    Progress,
    StoredTensor,
    check_weights,
    checked_shape,
    encode_tensor,
    gguf_reader,
    write_tensors,
)
from infer_core.model.recipes import FILE_TYPES, tensor_type
from infer_core.quant import GGUF_FORMATS, dequantize_gguf

#: Metadata the writer sets itself (the header, the architecture, the data alignment) or that changes.
NOT_COPIED = ("GGUF.", "general.architecture", "general.alignment", "general.file_type")
QUANTIZATION_VERSION = 2  # ggml's GGML_QNT_VERSION, which llama-quantize writes


def _dims(t: ReaderTensor) -> tuple[int, ...]:
    return tuple(int(n) for n in reversed(t.shape))  # (out, in), as the writer lists them


def requantize_plan(source: str | Path, weights: str, pure: bool = False) -> list[StoredTensor]:
    """Every tensor of ``source`` with the type llama-quantize gives it in file type ``weights``."""
    check_weights(weights)
    source = Path(source)
    reader = gguf_reader(source)
    shape, _ = checked_shape(reader, source)
    gqa = shape.n_heads // shape.n_kv_heads
    plan = []
    for t in reader.tensors:
        dims, current = _dims(t), t.tensor_type.name.lower()
        kind = tensor_type(t.name, dims, weights, shape.n_layers, gqa, shape.tied_embeddings, pure, current)
        plan.append(StoredTensor(t.name, dims, kind, int(t.n_bytes)) if kind == current
                    else StoredTensor.planned(t.name, dims, kind))
    return plan


def _float32(t: ReaderTensor, threads: int) -> np.ndarray:
    """The tensor's values as float32 (out, in)."""
    dims, kind = _dims(t), t.tensor_type.name.lower()
    if kind in GGUF_FORMATS:
        values = dequantize_gguf(np.asarray(t.data).reshape((*dims[:-1], -1)), kind, threads)
    elif kind == "f32":
        values = np.asarray(t.data)
    else:
        values = quants.dequantize(t.data, t.tensor_type)
    return np.asarray(values, dtype=np.float32).reshape(dims)


def requantize_gguf(source: str | Path, path: str | Path, weights: str, pure: bool = False, threads: int = 1,
                    progress: Progress | None = None) -> Path:
    """Write ``source`` requantized into llama-quantize's file type ``weights`` (its recipe, or every matrix in
    the type's default when ``pure``) at ``path``, atomically, one tensor at a time on ``threads`` threads;
    returns the path. ``progress`` is called after each tensor with (bytes written, bytes in all)."""
    source, path = Path(source), Path(path)
    plan = requantize_plan(source, weights, pure)
    reader = gguf_reader(source)
    with atomic_path(path) as tmp:
        w = GGUFWriter(str(tmp), str(reader.fields["general.architecture"].contents()))
        for field in reader.fields.values():
            if field.name.startswith(NOT_COPIED):
                continue
            kind = field.types[0]
            w.add_key_value(field.name, field.contents(), kind, sub_type=field.types[-1]
                            if kind == GGUFValueType.ARRAY else None)
        w.add_file_type(FILE_TYPES[weights].ftype)
        if "general.quantization_version" not in reader.fields:
            w.add_quantization_version(QUANTIZATION_VERSION)
        write_tensors(w, plan, (np.asarray(src.data).view(np.uint8).reshape(-1)  # already of its type: its bytes
                                if t.kind == src.tensor_type.name.lower() else
                                encode_tensor(_float32(src, threads), t.kind, threads)
                                for t, src in zip(plan, reader.tensors, strict=True)), progress)
        w.close()
    return path
