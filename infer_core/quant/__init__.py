"""Weight quantization: GGUF block formats, uniform b-bit, NF4, and error metrics."""

from infer_core.quant.gguf import GGUF_FORMATS, dequantize_gguf, gguf_format, quantize_gguf
from infer_core.quant.methods import FORMATS, GGUFTensor, QuantizedTensor, QuantSpec, quantize
from infer_core.quant.metrics import channel_errors, error_metrics, output_cosine
from infer_core.quant.nf4 import NF4_CODE, NF4Tensor, quantize_nf4
from infer_core.quant.uniform import UniformTensor, quantize_uniform
from infer_core.quant.weights import DISTRIBUTIONS, synthetic_weights

__all__ = [
    "DISTRIBUTIONS",
    "FORMATS",
    "GGUF_FORMATS",
    "NF4_CODE",
    "GGUFTensor",
    "NF4Tensor",
    "QuantSpec",
    "QuantizedTensor",
    "UniformTensor",
    "channel_errors",
    "dequantize_gguf",
    "error_metrics",
    "gguf_format",
    "output_cosine",
    "quantize",
    "quantize_gguf",
    "quantize_nf4",
    "quantize_uniform",
    "synthetic_weights",
]
