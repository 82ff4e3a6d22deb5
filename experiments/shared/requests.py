"""One record of a served request, and the one ``requests.csv`` schema of the serve and batching experiments.

One clock per request: every offset is measured from the request's arrival (when it was due). ``send_ms`` is when
it reached the server (a client holds it back while its concurrency cap is full; the engine loop receives each
request at its arrival, so 0 there); then its first token, each token, its end. The latencies follow vLLM's
definitions, from the send: TTFT = first token − send, E2E = end − send, TPOT = (end − first token) / (output
tokens − 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from experiments.framework.spec import Column

#: The per-request latencies (ms) a comparison treats as samples of their point.
LATENCIES = {"ttft_ms": "TTFT per request", "tpot_ms": "TPOT per request", "e2e_ms": "E2E per request"}

COLUMNS = (
    Column("request", "", "the request's number in its trace"),
    Column("arrival_s", "s", "when the request was due, from the start of the load (serve) or of the trace (batching)"),
    Column("send_ms", "ms", "from arrival to reaching the server (a client's cap held it; 0 in the engine loop)"),
    Column("first_token_ms", "ms", "from arrival to the first token"),
    Column("end_ms", "ms", "from arrival to the last token"),
    Column("token_ms", "ms", "from arrival to each token (or chunk of tokens), space-separated"),
    Column("ttft_ms", "ms", "time to first token: first token − send (vLLM's)", kind="measurement"),
    Column("tpot_ms", "ms", "time per output token: (end − first token) / (output tokens − 1); empty for one token",
           kind="measurement"),
    Column("e2e_ms", "ms", "end-to-end latency: end − send (vLLM's)", kind="measurement"),
    Column("prompt_tokens", "", "prompt tokens (as the model's tokenizer counts them, where known)"),
    Column("output_tokens", "", "tokens produced (the server's usage report, else one per token chunk)"),
    Column("error", "", "why the request failed, in one line; empty when it completed"),
)


@dataclass
class RequestRecord:
    """What happened to one request, on its own clock (seconds from its arrival)."""

    request: int
    arrival_s: float
    send_s: float  # from arrival to reaching the server
    token_s: list[float] = field(default_factory=list)  # from arrival to each token (or chunk)
    prompt_tokens: int | None = None
    output_tokens: int = 0
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # an experiment's own columns (declared by it)

    def row(self) -> dict[str, Any]:
        first, end = (self.token_s[0], self.token_s[-1]) if self.token_s else (math.nan, math.nan)
        tpot = (end - first) / (self.output_tokens - 1) if self.output_tokens > 1 else math.nan
        return {"request": self.request, "arrival_s": self.arrival_s, "send_ms": 1e3 * self.send_s,
                "first_token_ms": 1e3 * first, "end_ms": 1e3 * end,
                "token_ms": " ".join(f"{1e3 * t:.3f}" for t in self.token_s),
                "ttft_ms": 1e3 * (first - self.send_s), "tpot_ms": 1e3 * tpot, "e2e_ms": 1e3 * (end - self.send_s),
                "prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens, "error": self.error,
                **self.extra}


def request_table(records: Iterable[RequestRecord]) -> dict[str, list]:
    """The ``requests.csv`` sidecar of a variant: the shared columns, then each experiment's own."""
    rows = [r.row() for r in records]
    names = list(dict.fromkeys(k for row in rows for k in row)) or [c.name for c in COLUMNS]
    return {name: [row.get(name) for row in rows] for name in names}
