"""infer-sweep's NumPy library, by what each part serves: the toy decoder, its KV caches and attention kernels
(``infer_core.decoder``), serving requests (``infer_core.serving``), measuring (``infer_core.measure``: timing, the
machine's roofline, environment capture), quantization (``infer_core.quant``), GGUF models (``infer_core.model``:
``PRESETS`` is the one table of model shapes) and matrix products (``infer_core.matmul``).

Plain NumPy (plus threadpoolctl, and ``gguf`` for the file format): no Hydra, pandas or plotting
here, and no application paths (files are arguments), so every routine is usable from a Python shell.
"""

from infer_core.decoder.decode import GenerationCounts, generate, reference_outputs
from infer_core.decoder.kv_cache import Strategy, kv_cache_bytes
from infer_core.decoder.model import Decoder, DecoderShape, KVCache, decode_step, forward, init_decoder
from infer_core.measure.timing import TimeBudgetExceeded, Timing, measure, measure_interleaved, paired_ratios
from infer_core.model.shapes import PRESETS

__all__ = [
    "PRESETS",
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
