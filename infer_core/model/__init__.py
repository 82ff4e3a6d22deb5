"""Whole models: shapes from published configs, seeded random weights, GGUF files written and read,
and the NumPy reference forward (with a KV-cache decode) that llama.cpp is checked against."""

from infer_core.model.forward import Model
from infer_core.model.gguf_io import WEIGHT_TYPES, load_gguf, write_gguf
from infer_core.model.shapes import PRESETS, ModelShape, shape_of
from infer_core.model.weights import init_weights, tensor_shapes

__all__ = ["PRESETS", "WEIGHT_TYPES", "Model", "ModelShape", "init_weights", "load_gguf", "shape_of",
           "tensor_shapes", "write_gguf"]
