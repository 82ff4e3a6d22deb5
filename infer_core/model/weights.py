"""Random weights of a model shape, made from a seed, named and laid out as GGUF stores them.

Every matrix is ``(out, in)`` (GGUF lists the dimensions the other way round). The output
projection is scaled so that the next-token distributions are peaked: a model whose logits are
nearly flat would make every quantization format look lossless.
"""

from __future__ import annotations

import numpy as np

from infer_core.model.shapes import ModelShape

#: Standard deviation of the logits a unit-RMS hidden state produces: softmax then puts most mass
#: on a few tokens (mean entropy far below log(n_vocab)).
LOGIT_STD = 6.0


def tensor_shapes(shape: ModelShape) -> dict[str, tuple[int, ...]]:
    """Every tensor's name and (out, in) shape, in the order a GGUF file lists them."""
    d, kv, f = shape.d_model, shape.n_kv_heads * shape.d_head, shape.d_ffn
    out = {"token_embd.weight": (shape.n_vocab, d)}
    for i in range(shape.n_layers):
        b = f"blk.{i}."
        out |= {b + "attn_norm.weight": (d,), b + "attn_q.weight": (d, d), b + "attn_k.weight": (kv, d),
                b + "attn_v.weight": (kv, d), b + "attn_output.weight": (d, d), b + "ffn_norm.weight": (d,),
                b + "ffn_gate.weight": (f, d), b + "ffn_up.weight": (f, d), b + "ffn_down.weight": (d, f)}
        if shape.qkv_bias:
            out |= {b + "attn_q.bias": (d,), b + "attn_k.bias": (kv,), b + "attn_v.bias": (kv,)}
    out["output_norm.weight"] = (d,)
    if not shape.tied_embeddings:
        out["output.weight"] = (shape.n_vocab, d)
    return out


def init_weights(shape: ModelShape, seed: int) -> dict[str, np.ndarray]:
    """float32 weights drawn from ``numpy.random.default_rng(seed)``, tensor by tensor in file order."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, dims in tensor_shapes(shape).items():
        if name.endswith("norm.weight"):
            w = 1.0 + 0.1 * rng.standard_normal(dims)
        elif name.endswith(".bias"):
            w = 0.1 * rng.standard_normal(dims)
        elif name in ("output.weight", "token_embd.weight") and (name == "output.weight" or shape.tied_embeddings):
            w = rng.standard_normal(dims) * (LOGIT_STD / np.sqrt(dims[1]))  # the logits' projection
        elif name == "token_embd.weight":
            w = rng.standard_normal(dims)
        else:
            w = rng.standard_normal(dims) / np.sqrt(dims[1])
        weights[name] = w.astype(np.float32)
    return weights
