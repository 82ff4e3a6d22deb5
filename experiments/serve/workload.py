"""The requests of a load level: seeded lengths, prompts of a known token count, arrival times.

Prompts are random lowercase words, different from the first character on (a server that caches
prompt prefixes, as llama.cpp and vLLM do, must not find one). With the server's tokenizer at hand
(the embedded server: its model file) a prompt is cut to exactly the drawn number of tokens; without
it (a URL) a prompt has that many words and the server's own count is taken from its usage report.
A real model is given real text instead (:class:`Prompts` with the text's tokens): each prompt is a
stretch of it from a seeded offset, cut with the model's tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from experiments.serve.request import Request

Counter = Callable[[str], int]  # a prompt's token count as the server will count it


def words(rng: np.random.Generator, n: int) -> str:
    """``n`` random lowercase words of 2 to 7 letters."""
    letters = rng.integers(0, 26, (n, 7))
    sizes = rng.integers(2, 8, n)
    return " ".join("".join(chr(97 + c) for c in row[:k]) for row, k in zip(letters, sizes, strict=True))


def prompt(rng: np.random.Generator, n_tokens: int, count: Counter | None) -> tuple[str, int | None]:
    """A prompt of ``n_tokens`` tokens by ``count`` (the longest prefix of random words that does not exceed
    it; the count is exact unless the tokenizer jumps past it), or of ``n_tokens`` words, count unknown."""
    if count is None:
        return words(rng, n_tokens), None
    text = words(rng, n_tokens)
    while count(text) < n_tokens:
        text += " " + words(rng, n_tokens)
    lo, hi = 1, len(text)  # the longest prefix with count <= n_tokens
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if count(text[:mid]) <= n_tokens else (lo, mid - 1)
    text, have = text[:lo].rstrip(), count(text[:lo].rstrip())
    for letter in rng.integers(0, 26, 16):  # a space may cost several tokens: make up the rest with letters
        if have >= n_tokens:
            break
        longer = text + chr(97 + letter)
        if (c := count(longer)) <= n_tokens:
            text, have = longer, c
    return text, have


@dataclass(frozen=True)
class Prompts:
    """Where a point's prompts come from: random words (counted by ``count`` when the tokenizer is at hand), or
    ``tokens`` of a real text, each prompt a stretch of them from a seeded offset (``detokenize`` makes it text)."""

    count: Counter | None = None
    tokens: np.ndarray | None = None
    detokenize: Callable[[list[int]], str] | None = None

    def __call__(self, rng: np.random.Generator, n_tokens: int) -> tuple[str, int | None]:
        """A prompt of at most ``n_tokens`` tokens and its token count (None: not known before sending)."""
        if self.tokens is None or self.count is None or self.detokenize is None:
            return prompt(rng, n_tokens, self.count)
        if n_tokens >= len(self.tokens):
            raise ValueError(f"a prompt of {n_tokens} tokens is longer than the text ({len(self.tokens)} tokens)")
        start = int(rng.integers(0, len(self.tokens) - n_tokens))
        ids = [int(t) for t in self.tokens[start:start + n_tokens]]
        while True:  # cut and counted again: the tokens at the cut may merge differently
            text = self.detokenize(ids)
            have = self.count(text)
            if have <= n_tokens or len(ids) == 1:
                return text, have
            ids = ids[: len(ids) - (have - n_tokens)]


def requests(rng: np.random.Generator, prompt_lens: np.ndarray, output_lens: np.ndarray, due: np.ndarray,
             prompts: Prompts, first: int = 0) -> list[Request]:
    """One request per length pair, numbered from ``first``."""
    out = []
    for i, (p, o, t) in enumerate(zip(prompt_lens, output_lens, due, strict=True)):
        text, known = prompts(rng, int(p))
        out.append(Request(first + i, text, known, int(o), float(t)))
    return out
