"""What a request of the serve experiment is: its prompt and lengths (:class:`Request`), where and how it is sent
(:class:`Endpoint`: URL, API, headers, body), and what became of it (:class:`Outcome`: every token chunk's time,
the counts, the error)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from experiments.serve.streams import Api


@dataclass(frozen=True)
class Request:
    """One request of a workload: its prompt, the prompt's token count (None when not known before
    sending) and the output tokens asked for."""

    index: int
    prompt: str
    prompt_tokens: int | None
    max_tokens: int
    arrival_s: float = 0.0  # when it is due, from the start of the load (0: at once)


@dataclass
class Outcome:
    """What became of one request. Times in seconds; ``chunks_s`` from the moment the request had left
    the client (its body written to the socket), as the server saw it sent."""

    index: int
    max_tokens: int
    prompt_tokens: int | None
    arrival_s: float = 0.0  # when it was due
    sent_s: float = math.nan  # when the client began sending it (later than due when the concurrency cap held it)
    send_s: float = math.nan  # the client's own time to build and write the request
    chunks_s: list[float] = field(default_factory=list)  # arrival of each chunk that carried tokens
    output_tokens: int = 0  # the server's count (usage), else one per token chunk
    token_chunks: int = 0  # chunks that carried tokens, as the client counted them
    usage_tokens: int | None = None  # the server's usage count of output tokens, when it gave one
    prompt_tokens_reported: int | None = None
    text: str = ""  # what the server generated, as streamed
    error: str = ""
    resent: int = 0  # times it was sent again after a pooled connection turned out closed (nothing had arrived)

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def ttft_s(self) -> float:
        return self.chunks_s[0] if self.chunks_s else math.nan

    @property
    def e2el_s(self) -> float:
        """End-to-end latency: send to the last token chunk (vLLM's ``latency``)."""
        return self.chunks_s[-1] if self.chunks_s else math.nan

    @property
    def itl_s(self) -> list[float]:
        """Gaps between consecutive token chunks (a chunk may carry several tokens)."""
        return [b - a for a, b in zip(self.chunks_s, self.chunks_s[1:], strict=False)]

    @property
    def tpot_s(self) -> float:
        """(E2EL − TTFT) / (output tokens − 1), as vLLM defines it; NaN for a single token."""
        return (self.e2el_s - self.ttft_s) / (self.output_tokens - 1) if self.output_tokens > 1 else math.nan


@dataclass(frozen=True)
class Endpoint:
    """Where requests go and how they are written: base URL, API, the ``model`` field, headers (the API
    key, if any, lives only here, in memory), extra body fields and the per-request timeout."""

    url: str
    api: Api
    model: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    extra: dict = field(default_factory=dict)
    timeout_s: float = 60.0

    @property
    def json_headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", **self.headers}

    def payload(self, req: Request, stream: bool = True) -> dict:
        body = {"model": self.model, "stream": stream}
        if self.api is Api.ollama_generate:
            body |= {"prompt": req.prompt, "raw": True, "options": {"num_predict": req.max_tokens}}
        elif self.api is Api.openai_chat:
            body |= {"messages": [{"role": "user", "content": req.prompt}], "max_tokens": req.max_tokens,
                     "max_completion_tokens": req.max_tokens}
        else:
            body |= {"prompt": req.prompt, "max_tokens": req.max_tokens}
        if stream and self.api is not Api.ollama_generate:
            body["stream_options"] = {"include_usage": True}
        return body | self.extra
