"""llama-quantize's file types and the type each tensor gets in one (``llama_tensor_get_type`` in llama.cpp's
``src/llama-quant.cpp``, for the Llama-family models this project runs: no experts, no fused QKV).

A file type names a default type and a recipe. The recipe raises some tensors above the default:
- the output matrix (and the token embedding when it is tied to it): Q6_K, unless the type is Q8_0 already, or
  Q8_0 when its rows are not whole blocks of the default type;
- ``attn_v``, ``ffn_down`` and ``attn_output`` by file type and layer (:func:`use_more_bits` picks the layers of
  the ``_M`` mixes; Q2_K and Q3_K raise more, and by the model's grouped-query ratio).

``pure`` skips the recipe and stores every matrix in the default type (``llama-quantize --pure``). Either way a
matrix whose rows are not whole blocks of its type falls back (``tensor_type_fallback``): Q2_K and Q3_K to Q4_0,
Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0, and F16 when even 32-value blocks do not fit. One-dimensional tensors
(norms, biases) keep the type they have.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType


@dataclass(frozen=True)
class FileType:
    """One of llama-quantize's file types: its ``llama_ftype`` id (``general.file_type``) and default type."""

    name: str
    ftype: int
    default: str  # f32, f16 or a GGUF block format, lower case


#: llama-quantize's file types this project writes (``llama_ftype`` in llama.cpp's ``include/llama.h``).
FILE_TYPES: dict[str, FileType] = {t.name: t for t in (
    FileType("f32", 0, "f32"), FileType("f16", 1, "f16"), FileType("q8_0", 7, "q8_0"),
    FileType("q6_k", 18, "q6_k"), FileType("q5_k_m", 17, "q5_k"), FileType("q5_k_s", 16, "q5_k"),
    FileType("q5_1", 9, "q5_1"), FileType("q5_0", 8, "q5_0"), FileType("q4_k_m", 15, "q4_k"),
    FileType("q4_k_s", 14, "q4_k"), FileType("q4_1", 3, "q4_1"), FileType("q4_0", 2, "q4_0"),
    FileType("q3_k_l", 13, "q3_k"), FileType("q3_k_m", 12, "q3_k"), FileType("q3_k_s", 11, "q3_k"),
    FileType("q2_k", 10, "q2_k"))}  # q2_k_s and the IQ types need an importance matrix: not written here
FALLBACK = {"q2_k": "q4_0", "q3_k": "q4_0", "q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0"}


def block_size(kind: str) -> int:
    """Values per block of a stored type (1 for f32 and f16)."""
    return GGML_QUANT_SIZES[GGMLQuantizationType[kind.upper()]][0]


def use_more_bits(layer: int, n_layers: int) -> bool:
    """The layers llama.cpp's ``_M`` mixes give more bits: the first and last eighth, and every third between."""
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def fallback(kind: str, cols: int) -> str:
    """``kind``, or what llama.cpp stores instead when a row of ``cols`` values is not whole blocks of it."""
    if cols % block_size(kind) == 0:
        return kind
    kind = FALLBACK.get(kind, "f16")
    return kind if kind != "f16" and cols % block_size(kind) == 0 else "f16"


def _layer(name: str) -> int:
    return int(name.split(".")[1])


def _recipe(name: str, cols: int, ft: str, kind: str, n_layers: int, gqa: int, tied: bool) -> str:
    """``llama_tensor_get_type_impl`` for these file types: the type of matrix ``name`` before the fallback."""
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        return "q8_0" if cols % block_size(kind) else ("q6_k" if kind != "q8_0" else kind)
    if name.endswith(".attn_v.weight"):
        i = _layer(name)
        return {"q2_k": "q4_k" if gqa >= 4 else "q3_k",
                "q3_k_m": "q5_k" if i < 2 else "q4_k", "q3_k_l": "q5_k",
                "q4_k_m": "q6_k" if use_more_bits(i, n_layers) else kind,
                "q5_k_m": "q6_k" if use_more_bits(i, n_layers) else kind,
                "q4_k_s": "q5_k" if i < 4 else kind}.get(ft, kind)
    if name.endswith(".ffn_down.weight"):
        i = _layer(name)
        return {"q2_k": "q3_k",
                "q3_k_m": "q5_k" if i < n_layers // 16 else "q4_k", "q3_k_l": "q5_k",
                "q4_k_m": "q6_k" if use_more_bits(i, n_layers) else kind,
                "q5_k_m": "q6_k" if use_more_bits(i, n_layers) else kind,
                "q4_k_s": "q5_k" if i < n_layers // 8 else kind}.get(ft, kind)
    if name.endswith(".attn_output.weight"):
        return {"q2_k": "q3_k", "q3_k_m": "q4_k", "q3_k_l": "q5_k"}.get(ft, kind)
    return kind


def tensor_type(name: str, dims: tuple[int, ...], file_type: str, n_layers: int, gqa: int, tied: bool,
                pure: bool = False, current: str = "f32") -> str:
    """The type llama-quantize stores tensor ``name`` of (out, in) ``dims`` in, for ``file_type`` on a model of
    ``n_layers`` layers with ``gqa`` query heads per KV head and tied embeddings or not. ``current`` is the type
    the tensor has now: a one-dimensional tensor, or a norm, keeps it."""
    if len(dims) < 2 or not name.endswith("weight") or "_norm.weight" in name:
        return current
    kind = FILE_TYPES[file_type].default
    if kind in ("f32", "f16"):  # not a quantized type: no recipe, no fallback
        return kind
    if not pure:
        kind = _recipe(name, dims[-1], file_type, kind, n_layers, gqa, tied)
    return fallback(kind, dims[-1])
