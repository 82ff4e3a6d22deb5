"""The NumPy reference forward of a Llama-family model, and its decode path with a KV cache.

Per block, as llama.cpp computes it: ``h = rms_norm(x)·attn_norm``; Q, K, V projections (plus
biases for qwen2); rotary positions on Q and K (adjacent pairs for ``llama``, halves for
``qwen2``); causal grouped-query softmax attention scaled by 1/sqrt(d_head); the output
projection added to x; then ``h = rms_norm(x)·ffn_norm`` and ``x += down(silu(gate(h)) · up(h))``.
Finally ``logits = (rms_norm(x)·output_norm) @ outputᵀ`` (the token embedding when tied).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from infer_core.attention import attend
from infer_core.model.shapes import ModelShape


def rms_norm(x: np.ndarray, gain: np.ndarray, eps: float) -> np.ndarray:
    """``x / sqrt(mean(x²) + eps) · gain`` over the last axis."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * gain


def rope(x: np.ndarray, positions: np.ndarray, theta: float, neox: bool) -> np.ndarray:
    """Rotate each head of ``x`` (T, heads, d_head) by its position: dimension pair i turns by
    ``position · theta^(-2i/d_head)``; pairs are (2i, 2i+1), or (i, i + d_head/2) when ``neox``."""
    half = x.shape[-1] // 2
    freqs = theta ** (-np.arange(half, dtype=np.float64) * 2 / x.shape[-1])
    angle = positions[:, None].astype(np.float64) * freqs  # (T, half)
    cos, sin = (np.cos(angle)[:, None, :].astype(x.dtype), np.sin(angle)[:, None, :].astype(x.dtype))
    a, b = (x[..., :half], x[..., half:]) if neox else (x[..., 0::2], x[..., 1::2])
    ra, rb = a * cos - b * sin, a * sin + b * cos
    return np.concatenate([ra, rb], axis=-1) if neox else np.stack([ra, rb], axis=-1).reshape(x.shape)


@dataclass
class Model:
    """A model's shape and weights (GGUF names, (out, in) matrices) in one dtype; see :func:`load_gguf`."""

    shape: ModelShape
    weights: dict[str, np.ndarray]
    cache: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # per layer: K, V (T, Hkv, d_head)

    def w(self, name: str) -> np.ndarray:
        return self.weights[name]

    def logits(self, tokens: np.ndarray | list[int]) -> np.ndarray:
        """(len(tokens), n_vocab) next-token logits of one causal pass over ``tokens`` (the cache is reset)."""
        self.cache = []
        return self._forward(np.asarray(tokens), 0)

    def decode(self, tokens: np.ndarray | list[int]) -> np.ndarray:
        """Logits of ``tokens`` after those already cached (a prefill, or one token at a time)."""
        return self._forward(np.asarray(tokens), self.cache[0][0].shape[0] if self.cache else 0)

    def _forward(self, tokens: np.ndarray, start: int) -> np.ndarray:
        s = self.shape
        if tokens.ndim != 1 or len(tokens) == 0 or tokens.min() < 0 or tokens.max() >= s.n_vocab:
            raise ValueError(f"tokens must be a non-empty list of ids in [0, {s.n_vocab})")
        if start + len(tokens) > s.context:
            raise ValueError(f"{start} cached + {len(tokens)} new tokens exceed the context of {s.context}")
        t, dh, hkv = len(tokens), s.d_head, s.n_kv_heads
        positions = np.arange(start, start + t)
        x = self.w("token_embd.weight")[tokens]
        for i in range(s.n_layers):
            b = f"blk.{i}."
            h = rms_norm(x, self.w(b + "attn_norm.weight"), s.norm_eps)
            q, k, v = (h @ self.w(b + f"attn_{n}.weight").T for n in "qkv")
            if s.qkv_bias:
                q, k, v = q + self.w(b + "attn_q.bias"), k + self.w(b + "attn_k.bias"), v + self.w(b + "attn_v.bias")
            q = rope(q.reshape(t, s.n_heads, dh), positions, s.rope_theta, s.arch == "qwen2")
            k = rope(k.reshape(t, hkv, dh), positions, s.rope_theta, s.arch == "qwen2")
            v = v.reshape(t, hkv, dh)
            if len(self.cache) > i:
                k, v = np.concatenate([self.cache[i][0], k]), np.concatenate([self.cache[i][1], v])
                self.cache[i] = (k, v)
            else:
                self.cache.append((k, v))
            x = x + self._attention(q, k, v, start) @ self.w(b + "attn_output.weight").T
            h = rms_norm(x, self.w(b + "ffn_norm.weight"), s.norm_eps)
            gate = h @ self.w(b + "ffn_gate.weight").T
            x = x + (gate / (1 + np.exp(-gate)) * (h @ self.w(b + "ffn_up.weight").T)) @ self.w(b + "ffn_down.weight").T
        out = self.weights.get("output.weight", self.w("token_embd.weight"))
        return rms_norm(x, self.w("output_norm.weight"), s.norm_eps) @ out.T

    def _attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, start: int) -> np.ndarray:
        """Causal GQA attention of queries at ``start ..`` over keys ``0 ..``; returns (T, d_model)."""
        s = self.shape
        t, length, g = q.shape[0], k.shape[0], s.n_heads // s.n_kv_heads
        qg = q.reshape(t, s.n_kv_heads, g, s.d_head).transpose(1, 2, 0, 3)  # (Hkv, G, T, d_head)
        scores = qg @ k.transpose(1, 2, 0)[:, None] / np.sqrt(s.d_head).astype(q.dtype)  # (Hkv, G, T, L)
        future = np.arange(length)[None, :] > (start + np.arange(t))[:, None]
        scores[..., future] = -np.inf
        o = attend(scores, v.transpose(1, 2, 0)[:, None])  # (Hkv, G, T, d_head)
        return o.transpose(2, 0, 1, 3).reshape(t, s.d_model)
