"""What one model's tokens cost, in closed form: weight and KV-cache bytes a generated token reads,
and the FLOPs of a prompt, as the roofline of the engine experiment needs them."""

from __future__ import annotations

from infer_core.model.gguf_io import StoredTensor
from infer_core.model.shapes import ModelShape


def weight_bytes_per_token(shape: ModelShape, stored: list[StoredTensor], itemsize: float | None = None) -> int:
    """Bytes of weights one generated token reads: every tensor once, but only one row of the token
    embedding unless it is also the output matrix. ``itemsize``: bytes per weight when the engine
    holds the weights in another type (4 for float32), else the stored bytes."""
    total = 0
    for t in stored:
        size = round(itemsize * t.n_weights) if itemsize else t.nbytes
        if t.name == "token_embd.weight" and not shape.tied_embeddings:
            size //= shape.n_vocab
        total += size
    return total


def kv_bytes_per_token(shape: ModelShape, depth: int, n_gen: int, bytes_k: float, bytes_v: float) -> int:
    """KV-cache bytes a generated token reads, averaged over ``n_gen`` tokens generated after ``depth``
    cached ones: token j sees depth + j + 1 positions, so on average depth + (n_gen + 1) / 2."""
    mean_context = depth + (n_gen + 1) / 2
    return round(shape.n_layers * shape.n_kv_heads * shape.d_head * mean_context * (bytes_k + bytes_v))


def matrix_weights(shape: ModelShape) -> tuple[int, int]:
    """(weights of the per-token matrices of all layers, weights of the output matrix)."""
    d, kv = shape.d_model, shape.n_kv_heads * shape.d_head
    return shape.n_layers * (2 * d * d + 2 * d * kv + 3 * d * shape.d_ffn), shape.n_vocab * d


def prompt_flops(shape: ModelShape, n_prompt: int, depth: int) -> int:
    """FLOPs of a prompt of ``n_prompt`` tokens after ``depth`` cached ones: the layers' matrices for
    every token, the output matrix for the last only (as an engine computes it), and causal attention,
    QKᵀ and PV, 4·d_head per head and key each query sees."""
    layers, output = matrix_weights(shape)
    keys_seen = n_prompt * depth + n_prompt * (n_prompt + 1) // 2
    return 2 * layers * n_prompt + 2 * output + 4 * shape.d_head * shape.n_heads * shape.n_layers * keys_seen
