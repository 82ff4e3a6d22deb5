"""What the scripted server (:mod:`experiments.serve.scripted`) says: its script, and the bytes of an answer
in each API's stream format, the last chunk carrying the usage report and the end of the stream."""

from __future__ import annotations

import argparse
import functools
import json
import os
from dataclasses import dataclass

FAULTS = ("none", "malformed", "stall", "http401", "http429", "http500", "cut", "close")  # close: after the answer


@dataclass(frozen=True)
class Script:
    """What the server does: delays in milliseconds, words per chunk, keep-alive comments, a fault."""

    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    tokens_per_chunk: int = 1
    ping: bool = False
    fault: str = "none"
    fault_every: int = 1
    api_key: str | None = None


def _event(obj: dict | str) -> bytes:
    return b"data: " + (obj if isinstance(obj, str) else json.dumps(obj)).encode() + b"\n\n"


@functools.lru_cache(maxsize=64)
def script_chunks(path: str, n: int, k: int, ping: bool, prompt_tokens: int) -> tuple[bytes, ...]:
    """The chunks of an answer of ``n`` words, ``k`` per chunk; the last one also carries the usage report and
    the end of the stream."""
    ollama, chat = path == "/api/generate", path.endswith("/chat/completions")
    out = []
    for first in range(0, n, k):
        text = "".join(f" w{i}" for i in range(first, min(first + k, n)))
        if ollama:
            data = json.dumps({"response": text, "done": False}).encode() + b"\n"
        elif chat:
            data = _event({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
        else:
            data = _event({"choices": [{"index": 0, "text": text, "finish_reason": None}]})
        out.append((b": ping\n\n" if ping and not ollama else b"") + data)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}
    if ollama:
        out[-1] += json.dumps({"response": "", "done": True, "eval_count": n, "prompt_eval_count": prompt_tokens}
                              ).encode() + b"\n"
    else:
        out[-1] += (_event({"choices": [{"index": 0, "text": "", "finish_reason": "length"}]})
                    + _event({"choices": [], "usage": usage}) + _event("[DONE]"))
    return tuple(out)


def parse_args(argv: list[str]) -> tuple[Script, int]:
    """The scripted server's command line: its script and the port to listen on (0: a free one)."""
    parser = argparse.ArgumentParser(description="A scripted streaming server (python -m experiments.serve.scripted)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--itl-ms", type=float, default=0.0)
    parser.add_argument("--tokens-per-chunk", type=int, default=1)
    parser.add_argument("--ping", action="store_true", help="a keep-alive comment before every event")
    parser.add_argument("--fault", choices=FAULTS, default="none")
    parser.add_argument("--fault-every", type=int, default=1, help="the fault hits every N-th request")
    parser.add_argument("--api-key-env", help="require the key held by this environment variable")
    a = parser.parse_args(argv)
    key = os.environ[a.api_key_env] if a.api_key_env else None
    return Script(a.ttft_ms, a.itl_ms, a.tokens_per_chunk, a.ping, a.fault, a.fault_every, key), a.port
