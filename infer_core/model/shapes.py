"""Shapes of decoder-only models, as their published configs give them: the data a model is made from."""

from __future__ import annotations

from dataclasses import dataclass

ARCHITECTURES = ("llama", "qwen2")


@dataclass(frozen=True)
class ModelShape:
    """A Llama-family decoder: RMSNorm, rotary positions, grouped-query attention, SwiGLU feed-forward.

    ``arch`` is the GGUF architecture: ``llama`` rotates adjacent pairs of each head's dimensions,
    ``qwen2`` rotates the two halves (llama.cpp's NEOX order) and has biases on Q, K and V.
    """

    arch: str
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ffn: int
    n_vocab: int
    tied_embeddings: bool = False  # the output projection is the token embedding
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    context: int = 2048

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch={self.arch!r} must be one of {', '.join(ARCHITECTURES)}")
        for name in ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ffn", "n_vocab", "context"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model={self.d_model} must split into n_heads={self.n_heads} heads of even width")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} must be divisible by n_kv_heads={self.n_kv_heads}")
        if self.n_vocab < 259:
            raise ValueError(f"n_vocab={self.n_vocab} must be >= 259: 256 byte tokens and 3 control tokens")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def kv_cache_bytes(self, seq_len: int, batch: int = 1, bytes_per_element: int = 2) -> int:
        """Bytes of the K and V caches of every layer for ``batch`` sequences of ``seq_len`` tokens."""
        return 2 * self.n_layers * self.n_kv_heads * self.d_head * seq_len * batch * bytes_per_element

    @property
    def qkv_bias(self) -> bool:
        return self.arch == "qwen2"

    @property
    def n_params(self) -> int:
        """Weights in the model (norms and biases included)."""
        d, kv = self.d_model, self.n_kv_heads * self.d_head
        per_layer = 2 * d + d * d + 2 * d * kv + d * d + 3 * d * self.d_ffn + (d + 2 * kv if self.qkv_bias else 0)
        head = 0 if self.tied_embeddings else self.n_vocab * d
        return self.n_vocab * d + self.n_layers * per_layer + d + head


#: From the models' published configs (hidden size, layers, heads, KV heads, FFN width, vocabulary).
PRESETS: dict[str, ModelShape] = {
    "tiny": ModelShape("llama", 128, 2, 4, 2, 256, 512),
    "tiny-qwen2": ModelShape("qwen2", 128, 2, 4, 2, 256, 512, tied_embeddings=True, rope_theta=1e6, norm_eps=1e-6),
    "tinyllama-1.1b": ModelShape("llama", 2048, 22, 32, 4, 5632, 32000),
    "qwen2.5-0.5b": ModelShape("qwen2", 896, 24, 14, 2, 4864, 151936, tied_embeddings=True, rope_theta=1e6,
                               norm_eps=1e-6, context=32768),
    "llama-2-7b": ModelShape("llama", 4096, 32, 32, 32, 11008, 32000, context=4096),
    "llama-3-8b": ModelShape("llama", 4096, 32, 32, 8, 14336, 128256, rope_theta=500000.0, context=8192),
}


def shape_of(name: str) -> ModelShape:
    """The preset called ``name``; a ValueError listing the presets otherwise."""
    if name not in PRESETS:
        raise ValueError(f"model={name!r} is not a known shape: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
