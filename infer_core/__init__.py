"""infer-sweep's NumPy library: attention and KV caches, quantization (``infer_core.quant``),
matrix products and the machine's roofline, timing, environment capture.

Plain NumPy (plus threadpoolctl, and ``gguf`` for the file format): no Hydra, pandas or plotting
here, and no application paths (files are arguments), so every routine is usable from a Python shell.
"""

from infer_core.attention import Decoder, DecoderShape, KVCache, decode_step, forward, init_decoder
from infer_core.decode import GenerationCounts, generate, reference_outputs
from infer_core.kv_cache import MODEL_PRESETS, Strategy, kv_cache_bytes
from infer_core.timing import TimeBudgetExceeded, Timing, measure, measure_interleaved, paired_ratios

__all__ = [
    "MODEL_PRESETS",
    "Decoder",
    "DecoderShape",
    "GenerationCounts",
    "KVCache",
    "Strategy",
    "TimeBudgetExceeded",
    "Timing",
    "decode_step",
    "forward",
    "generate",
    "init_decoder",
    "kv_cache_bytes",
    "measure",
    "measure_interleaved",
    "paired_ratios",
    "reference_outputs",
]
