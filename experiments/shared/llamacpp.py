"""llama.cpp through llama-cpp-python, for every experiment that runs it (engine, quality): a loaded model file,
llama-bench's tests on it (:func:`time_test`, :func:`rates`), its logits, and ggml's own quantizer (for comparisons
with ours).

The tests call llama.cpp as llama-bench does: ``llama_decode`` on ``llama_batch_get_one`` batches
(positions follow the cache), a prompt in ``n_batch`` chunks, generation one token per call, and
``llama_synchronize`` at the end of each test. ``llama_cpp`` is imported on first use, so the
experiment's module loads without the engine extra.
"""

from __future__ import annotations

import ctypes
import glob
import os
import time
from enum import Enum
from pathlib import Path

import numpy as np

from experiments.framework.bench import BenchConfig
from experiments.shared.llama_build import CACHE_TYPE_IDS, check_build
from infer_core.measure.timing import Timing

#: Bytes per cached element of each KV cache type: 32-value blocks of 34 (q8_0) and 18 (q4_0) bytes.
CACHE_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


class CacheType(Enum):
    """Element type of llama.cpp's K or V cache."""

    f32 = "f32"
    f16 = "f16"
    q8_0 = "q8_0"
    q4_0 = "q4_0"


class LlamaCpp:
    """A GGUF model loaded into llama.cpp with one context; ``load_s`` is how long loading took."""

    def __init__(self, path: str | Path, threads: int, n_ctx: int, n_batch: int = 2048, n_ubatch: int = 512,
                 flash_attn: bool = False, type_k: str = "f16", type_v: str = "f16", logits_all: bool = False) -> None:
        import llama_cpp

        check_build()
        self._lib = llama_cpp
        start = time.perf_counter()
        try:
            self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch,
                                       n_threads=threads, n_threads_batch=threads, flash_attn=flash_attn,
                                       type_k=CACHE_TYPE_IDS[type_k], type_v=CACHE_TYPE_IDS[type_v],
                                       logits_all=logits_all, verbose=False)
        except ValueError as exc:  # llama-cpp-python's "Failed to load model from file"
            raise ValueError(f"llama.cpp could not load {path}: {exc}") from None
        self.load_s = time.perf_counter() - start
        self.ctx = self.llm._ctx.ctx
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.n_batch, self.n_vocab = n_batch, self.llm.n_vocab()
        self._arrays: list[object] = []

    def close(self) -> None:
        self.llm.close()

    def __enter__(self) -> LlamaCpp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_threads(self, threads: int) -> None:
        """Run the following calls on ``threads`` threads (generation and batches alike)."""
        self._lib.llama_set_n_threads(self.ctx, threads, threads)

    def keep(self, n_tokens: int) -> None:
        """Forget every cached token after the first ``n_tokens``."""
        self._lib.llama_memory_seq_rm(self.memory, 0, n_tokens, -1)

    def batches(self, tokens: np.ndarray, size: int) -> list[tuple[object, int]]:
        """``llama_batch_get_one`` batches of at most ``size`` tokens over one array (made before timing)."""
        array = (self._lib.llama_token * len(tokens))(*(int(t) for t in tokens))
        self._arrays.append(array)  # the batches point into it
        base = ctypes.addressof(array)
        item = ctypes.sizeof(self._lib.llama_token)
        pointer = ctypes.POINTER(self._lib.llama_token)
        return [(self._lib.llama_batch_get_one(ctypes.cast(base + i * item, pointer), min(size, len(tokens) - i)),
                 min(size, len(tokens) - i)) for i in range(0, len(tokens), size)]

    def run(self, batches: list[tuple[object, int]]) -> None:
        """Decode the batches in order, then wait for the computation to finish."""
        decode, ctx = self._lib.llama_decode, self.ctx
        for batch, _ in batches:
            if decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed (the context is full?)")
        self._lib.llama_synchronize(ctx)

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        """(len(tokens), n_vocab) float32 logits of a fresh causal pass over ``tokens`` (needs ``logits_all``)."""
        self.keep(0)
        self.llm.n_tokens = 0
        self.llm.eval([int(t) for t in tokens])
        return np.array(self.llm.scores[: len(tokens)], dtype=np.float32)


def time_test(engine: LlamaCpp, tokens: np.ndarray, size: int, depth: int, bench: BenchConfig) -> Timing:
    """llama-bench's test: ``tokens`` decoded in batches of ``size`` (a prompt: ``n_batch``; generation: 1), each
    call restarting from a cache that holds its first ``depth`` tokens, timed as ``bench`` says."""
    start = time.perf_counter()
    batches = engine.batches(tokens, size)

    def once() -> None:
        engine.keep(depth)
        engine.run(batches)

    return bench.measure(once, start)


def rates(timing: Timing, n_tokens: int) -> dict[str, float]:
    """llama-bench's figures of a test of ``n_tokens``: the median tokens/s over the samples, its standard deviation
    (llama-bench's ±), and its quartiles."""
    r = n_tokens / timing.per_call_s
    return {"tokens_per_s": float(np.median(r)), "tokens_per_s_std": float(r.std(ddof=1)) if len(r) > 1 else 0.0,
            "tokens_per_s_q1": float(np.percentile(r, 25)), "tokens_per_s_q3": float(np.percentile(r, 75))}


def llamacpp_quantize(source: str | Path, path: str | Path, ftype: int, pure: bool = False, threads: int = 2) -> None:
    """``llama-quantize --allow-requantize [--pure] source path FTYPE`` through ``llama_model_quantize`` (llama.cpp's
    own quantizer, no importance matrix), for comparisons with ours; RuntimeError when it fails."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread, params.pure, params.allow_requantize = ftype, threads, pure, True
    if llama_cpp.llama_model_quantize(str(source).encode(), str(path).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama_model_quantize failed on {source} (file type {ftype})")


def ggml_library() -> ctypes.CDLL:
    """ggml's base library as llama-cpp-python ships it."""
    import llama_cpp

    folder = Path(llama_cpp.__file__).parent / "lib"
    found = sorted(glob.glob(os.path.join(folder, "libggml-base.*")))
    if not found:
        raise OSError(f"no libggml-base in {folder}")
    lib = ctypes.CDLL(found[0])
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return lib


def ggml_quantize(x: np.ndarray, fmt: str, lib: ctypes.CDLL | None = None) -> np.ndarray:
    """Quantize float32 rows ``x`` (rows, n) to GGUF format ``fmt`` with llama.cpp's own C quantizer
    (``ggml_quantize_chunk``, no importance matrix: what ``llama-quantize`` does without one), one thread."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    qtype = GGMLQuantizationType[fmt.upper()]
    block, size = GGML_QUANT_SIZES[qtype]
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows, n = x.shape
    out = np.empty((rows, n // block * size), dtype=np.uint8)
    (lib or ggml_library()).ggml_quantize_chunk(int(qtype), x.ctypes.data, out.ctypes.data, 0, rows, n, None)
    return out
