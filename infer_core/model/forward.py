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

from infer_core.attention import DecoderShape, causal_attention
from infer_core.kv_cache import PreallocCache
from infer_core.model.shapes import ModelShape


def rms_norm(x: np.ndarray, gain: np.ndarray, eps: float) -> np.ndarray:
    """``x / sqrt(mean(x²) + eps) · gain`` over the last axis."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * gain


def rope_tables(positions: np.ndarray, d_head: int, theta: float, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin (T, 1, d_head/2) of the angles ``position · theta^(-2i/d_head)``, computed in float64."""
    half = d_head // 2
    freqs = theta ** (-np.arange(half, dtype=np.float64) * 2 / d_head)
    angle = np.asarray(positions)[:, None].astype(np.float64) * freqs  # (T, half)
    return np.cos(angle)[:, None, :].astype(dtype), np.sin(angle)[:, None, :].astype(dtype)


def rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, neox: bool) -> np.ndarray:
    """Turn each head of ``x`` (T, heads, d_head) by the angles of :func:`rope_tables`: pairs
    (2i, 2i+1), or (i, i + d_head/2) when ``neox``."""
    half = x.shape[-1] // 2
    a, b = (x[..., :half], x[..., half:]) if neox else (x[..., 0::2], x[..., 1::2])
    ra, rb = a * cos - b * sin, a * sin + b * cos
    return np.concatenate([ra, rb], axis=-1) if neox else np.stack([ra, rb], axis=-1).reshape(x.shape)


def rope(x: np.ndarray, positions: np.ndarray, theta: float, neox: bool) -> np.ndarray:
    """Rotate each head of ``x`` (T, heads, d_head) by its position: dimension pair i turns by
    ``position · theta^(-2i/d_head)``; pairs are (2i, 2i+1), or (i, i + d_head/2) when ``neox``."""
    return rotate(x, *rope_tables(positions, x.shape[-1], theta, x.dtype), neox)


@dataclass
class Model:
    """A model's shape and weights (GGUF names, (out, in) matrices) in one dtype; see :func:`load_gguf`.

    ``decode`` keeps keys and values in a :class:`~infer_core.kv_cache.PreallocCache` sized for the
    context (its pages are touched only as tokens arrive).
    """

    shape: ModelShape
    weights: dict[str, np.ndarray]
    cache: PreallocCache | None = field(default=None, repr=False)

    def w(self, name: str) -> np.ndarray:
        return self.weights[name]

    @property
    def n_cached(self) -> int:
        """Tokens in the cache."""
        return 0 if self.cache is None else self.cache.length[0]

    def reset(self) -> None:
        """Empty the cache."""
        if self.cache is None:
            s = self.shape
            dtype = str(self.w("token_embd.weight").dtype)
            self.cache = PreallocCache(DecoderShape(s.d_model, s.n_heads, s.n_kv_heads, s.n_layers, dtype), 1,
                                       s.context)
        self.cache.reset()

    def rewind(self, n_tokens: int) -> None:
        """Keep the first ``n_tokens`` of the cache: the next ``decode`` continues after them."""
        if self.cache is None:
            self.reset()
        self.cache.truncate(n_tokens)

    def logits(self, tokens: np.ndarray | list[int]) -> np.ndarray:
        """(len(tokens), n_vocab) next-token logits of one causal pass over ``tokens`` (the cache is reset)."""
        self.reset()
        return self.decode(tokens)

    def decode(self, tokens: np.ndarray | list[int], last_only: bool = False) -> np.ndarray:
        """Logits of ``tokens`` after those already cached (a prefill, or one token at a time): one row
        per token, or only the last token's (1, n_vocab) when ``last_only`` (what generation needs)."""
        if self.cache is None:
            self.reset()
        return self._forward(np.asarray(tokens), self.n_cached, last_only)

    def _forward(self, tokens: np.ndarray, start: int, last_only: bool = False) -> np.ndarray:
        s = self.shape
        if tokens.ndim != 1 or len(tokens) == 0 or tokens.min() < 0 or tokens.max() >= s.n_vocab:
            raise ValueError(f"tokens must be a non-empty list of ids in [0, {s.n_vocab})")
        if start + len(tokens) > s.context:
            raise ValueError(f"{start} cached + {len(tokens)} new tokens exceed the context of {s.context}")
        t, dh, hkv, g = len(tokens), s.d_head, s.n_kv_heads, s.n_heads // s.n_kv_heads
        x = self.w("token_embd.weight")[tokens]
        dtype, neox = x.dtype, s.arch == "qwen2"
        cos, sin = rope_tables(np.arange(start, start + t), dh, s.rope_theta, dtype)
        scale = dtype.type(1 / np.sqrt(dh))  # a float64 scalar here would turn every product float64
        for i in range(s.n_layers):
            b = f"blk.{i}."
            h = rms_norm(x, self.w(b + "attn_norm.weight"), s.norm_eps)
            q, k, v = (h @ self.w(b + f"attn_{n}.weight").T for n in "qkv")
            if s.qkv_bias:
                q, k, v = q + self.w(b + "attn_q.bias"), k + self.w(b + "attn_k.bias"), v + self.w(b + "attn_v.bias")
            q = rotate(q.reshape(t, s.n_heads, dh), cos, sin, neox) * scale
            k = rotate(k.reshape(t, hkv, dh), cos, sin, neox)
            kv = self.cache.append(i, np.concatenate([k.reshape(t, -1), v], axis=1).T[None])  # (1, 2, Hkv, dh, L)
            qg = q.reshape(t, hkv, g, dh).transpose(1, 2, 0, 3)[None]  # (1, Hkv, G, T, d_head)
            o = causal_attention(qg, kv[:, 0], kv[:, 1], offset=start)[0]  # (Hkv, G, T, d_head)
            x = x + o.transpose(2, 0, 1, 3).reshape(t, s.d_model) @ self.w(b + "attn_output.weight").T
            h = rms_norm(x, self.w(b + "ffn_norm.weight"), s.norm_eps)
            gate = h @ self.w(b + "ffn_gate.weight").T
            x = x + (gate / (1 + np.exp(-gate)) * (h @ self.w(b + "ffn_up.weight").T)) @ self.w(b + "ffn_down.weight").T
        out = self.weights.get("output.weight", self.w("token_embd.weight"))
        return rms_norm(x[-1:] if last_only else x, self.w("output_norm.weight"), s.norm_eps) @ out.T
