"""Random weights of a model shape, made from a seed, named and laid out as GGUF stores them.

Every matrix is ``(out, in)`` (GGUF lists the dimensions the other way round). The output
projection is scaled so that the next-token distributions are peaked: a model whose logits are
nearly flat would make every quantization format look lossless.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

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


#: Rows drawn from one generator: tensors are filled block by block, each block from its own
#: generator seeded by (seed, tensor, block), so the values do not depend on the thread count.
ROWS_PER_STREAM = 256


def _standard_normal(dims: tuple[int, ...], seed: int, index: int, threads: int) -> np.ndarray:
    """float32 N(0, 1) values of shape ``dims`` for tensor number ``index`` of the model from ``seed``."""
    out = np.empty(dims, dtype=np.float32)
    rows = out.reshape(-1, dims[-1]) if len(dims) > 1 else out.reshape(1, -1)

    def fill(start: int) -> None:
        block = rows[start : start + ROWS_PER_STREAM]
        np.random.default_rng([seed, index, start]).standard_normal(block.shape, dtype=np.float32, out=block)

    starts = range(0, len(rows), ROWS_PER_STREAM)
    if threads > 1 and len(starts) > 1:  # a Generator releases the GIL while it fills an array
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fill, starts))
    else:
        for start in starts:
            fill(start)
    return out


def iter_weights(shape: ModelShape, seed: int, threads: int = 1) -> Iterator[tuple[str, np.ndarray]]:
    """(name, float32 array) in file order, one tensor at a time (so a writer never holds more than
    one), drawn on ``threads`` threads; the values depend only on the shape and ``seed``.

    Norm gains are 1 + 0.1·N(0, 1), biases 0.1·N(0, 1), the embedding N(0, 1); a matrix reading
    ``n`` inputs has std 1/sqrt(n), and those that write into the residual stream (``attn_output``,
    ``ffn_down``) a further 1/sqrt(2·n_layers), as GPT-2 initializes them: the residual stream then
    stays of the embedding's size and the network is not chaotic, so a small change of the weights
    makes a small change of the logits, as in a trained model. With tied embeddings the output matrix
    is the input one: a final state that keeps the token's own embedding e scores that token e·e > 0
    above every other, and the model predicts its input (Qwen2.5-0.5B's shape: every token, entropy
    0.0006 nats). There the output norm's gains get random signs, which leaves each logit's spread
    as it is but takes away the token's bias toward itself.
    """
    residual = 1 / np.sqrt(2 * shape.n_layers)
    for index, (name, dims) in enumerate(tensor_shapes(shape).items()):
        w = _standard_normal(dims, seed, index, threads)
        if name == "output_norm.weight" and shape.tied_embeddings:  # signs from the gains' own draws
            w = np.where(w > 0, np.float32(1), np.float32(-1)) * (np.float32(1) + np.float32(0.1) * np.abs(w))
        elif name.endswith("norm.weight"):
            w = np.float32(1) + np.float32(0.1) * w
        elif name.endswith(".bias"):
            w *= np.float32(0.1)
        elif name == "output.weight" or (name == "token_embd.weight" and shape.tied_embeddings):
            w *= np.float32(LOGIT_STD / np.sqrt(dims[1]))  # the logits' projection
        elif name.endswith((".attn_output.weight", ".ffn_down.weight")):
            w *= np.float32(residual / np.sqrt(dims[1]))
        elif name != "token_embd.weight":
            w *= np.float32(1 / np.sqrt(dims[1]))
        yield name, w


def init_weights(shape: ModelShape, seed: int, threads: int = 1) -> dict[str, np.ndarray]:
    """Every tensor of :func:`iter_weights`, by name."""
    return dict(iter_weights(shape, seed, threads))
