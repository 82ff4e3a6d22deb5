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

from infer_core.decoder.kv_cache import PreallocCache
from infer_core.decoder.model import DecoderShape, causal_attention
from infer_core.model.shapes import ModelShape


def rms_norm(x: np.ndarray, gain: np.ndarray, eps: float) -> np.ndarray:
    """``x / sqrt(mean(x²) + eps) · gain`` over the last axis (the sum of squares as one dot product
    per row: ``np.mean``'s overhead is most of the cost for a single token)."""
    mean_square = np.einsum("...i,...i->...", x, x)[..., None] / x.shape[-1]
    return x * (gain / np.sqrt(mean_square + eps))


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
    first, second = (slice(None, half), slice(half, None)) if neox else (slice(0, None, 2), slice(1, None, 2))
    a, b = x[..., first], x[..., second]
    out = np.empty_like(x)
    out[..., first] = a * cos - b * sin
    out[..., second] = a * sin + b * cos
    return out


def rope(x: np.ndarray, positions: np.ndarray, theta: float, neox: bool) -> np.ndarray:
    """Rotate each head of ``x`` (T, heads, d_head) by its position: dimension pair i turns by
    ``position · theta^(-2i/d_head)``; pairs are (2i, 2i+1), or (i, i + d_head/2) when ``neox``."""
    return rotate(x, *rope_tables(positions, x.shape[-1], theta, x.dtype), neox)


@dataclass
class Model:
    """A model's shape and weights (GGUF names, (out, in) matrices) in one dtype; see :func:`load_gguf`.

    ``decode`` keeps keys and values in a :class:`~infer_core.decoder.kv_cache.PreallocCache` sized for the
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

    def fuse(self) -> Model:
        """Store Q, K, V (and their biases) as one matrix per layer, and gate and up as another: a token
        then makes 4 matrix products per layer instead of 7 (same arithmetic). Returns the model."""
        for i in range(self.shape.n_layers):
            b = f"blk.{i}."
            for fused, parts in (("attn_qkv.weight", ("attn_q.weight", "attn_k.weight", "attn_v.weight")),
                                 ("attn_qkv.bias", ("attn_q.bias", "attn_k.bias", "attn_v.bias")),
                                 ("ffn_gate_up.weight", ("ffn_gate.weight", "ffn_up.weight"))):
                if all(b + p in self.weights for p in parts):
                    self.weights[b + fused] = np.concatenate([self.weights.pop(b + p) for p in parts])
        return self

    def _qkv(self, b: str, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Q, K, V of the normalized states ``h`` (T, d_model) in layer ``b``, biases added."""
        s = self.shape
        if b + "attn_qkv.weight" in self.weights:
            qkv = h @ self.w(b + "attn_qkv.weight").T
            if s.qkv_bias:
                qkv += self.w(b + "attn_qkv.bias")
            d, kv = s.d_model, s.n_kv_heads * s.d_head
            return qkv[:, :d], qkv[:, d : d + kv], qkv[:, d + kv :]
        q, k, v = (h @ self.w(b + f"attn_{n}.weight").T for n in "qkv")
        if s.qkv_bias:
            q, k, v = q + self.w(b + "attn_q.bias"), k + self.w(b + "attn_k.bias"), v + self.w(b + "attn_v.bias")
        return q, k, v

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
            q, k, v = self._qkv(b, h)
            q = rotate(q.reshape(t, s.n_heads, dh), cos, sin, neox) * scale
            k = rotate(k.reshape(t, hkv, dh), cos, sin, neox)
            kv = self.cache.append(i, np.concatenate([k.reshape(t, -1), v], axis=1).T[None])  # (1, 2, Hkv, dh, L)
            qg = q.reshape(t, hkv, g, dh).transpose(1, 2, 0, 3)[None]  # (1, Hkv, G, T, d_head)
            o = causal_attention(qg, kv[:, 0], kv[:, 1], offset=start)[0]  # (Hkv, G, T, d_head)
            x = x + o.transpose(2, 0, 1, 3).reshape(t, s.d_model) @ self.w(b + "attn_output.weight").T
            h = rms_norm(x, self.w(b + "ffn_norm.weight"), s.norm_eps)
            if b + "ffn_gate_up.weight" in self.weights:  # fused: one product for both
                gate, up = np.split(h @ self.w(b + "ffn_gate_up.weight").T, 2, axis=1)
            else:
                gate, up = h @ self.w(b + "ffn_gate.weight").T, h @ self.w(b + "ffn_up.weight").T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ self.w(b + "ffn_down.weight").T
        out = self.weights.get("output.weight", self.w("token_embd.weight"))
        return rms_norm(x[-1:] if last_only else x, self.w("output_norm.weight"), s.norm_eps) @ out.T
