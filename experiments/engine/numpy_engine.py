"""The NumPy reference as an engine: the same tests as llama.cpp's, run by ``infer_core.model``'s forward
on the file's weights dequantized to float32, with BLAS limited to the engine's threads."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from infer_core.model import load_gguf


class NumpyEngine:
    """A GGUF file loaded by ``load_gguf``; the interface of :class:`~experiments.shared.llamacpp.LlamaCpp`."""

    def __init__(self, path: str | Path, threads: int) -> None:
        start = time.perf_counter()
        self.model = load_gguf(path, threads=threads).fuse()
        self.load_s = time.perf_counter() - start
        self.threads = threads
        self.n_vocab = self.model.shape.n_vocab

    def close(self) -> None:
        self.model = None

    def __enter__(self) -> NumpyEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def keep(self, n_tokens: int) -> None:
        self.model.rewind(n_tokens)

    def batches(self, tokens: np.ndarray, size: int) -> list[np.ndarray]:
        return [tokens[i : i + size] for i in range(0, len(tokens), size)]

    def run(self, batches: list[np.ndarray]) -> None:
        with threadpool_limits(self.threads, user_api="blas"):
            for batch in batches:
                self.model.decode(batch, last_only=True)

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        with threadpool_limits(self.threads, user_api="blas"):
            return self.model.logits(tokens).astype(np.float32)
