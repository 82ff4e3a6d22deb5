"""infer-sweep's NumPy library: attention and KV caches, timing, environment capture.

Plain NumPy (plus threadpoolctl): no Hydra, pandas or plotting here, so every routine
is usable from a Python shell.
"""

from infer_core.attention import Counts, Decoder, DecoderShape, forward, init_decoder
from infer_core.decode import generate, reference_outputs
from infer_core.kv_cache import MODEL_PRESETS, Strategy, kv_cache_bytes
from infer_core.timing import TimeBudgetExceeded, Timing, measure

__all__ = [
    "MODEL_PRESETS",
    "Counts",
    "Decoder",
    "DecoderShape",
    "Strategy",
    "TimeBudgetExceeded",
    "Timing",
    "forward",
    "generate",
    "init_decoder",
    "kv_cache_bytes",
    "measure",
    "reference_outputs",
]
