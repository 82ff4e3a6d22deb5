"""The serve experiment's client: one streamed request at a time, each chunk timed as it arrives.

aiohttp (not httpx): its streaming reader hands over whatever bytes arrived, with no per-chunk
overhead, and vLLM's own benchmark uses it, so our numbers are taken the way theirs are. The
stream parsers (:mod:`experiments.serve.streams`) turn bytes into token chunks; this module sends
the request, stamps the chunks and turns every failure (HTTP status, a refused or dropped
connection, a malformed chunk, a stall past the timeout) into one line on the request's outcome.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import math
import time
from dataclasses import dataclass, field

import aiohttp

from experiments.serve.streams import Api, MalformedStream, parser_for


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
    prompt_tokens_reported: int | None = None
    text: str = ""  # what the server generated, as streamed
    error: str = ""

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


async def send(session: aiohttp.ClientSession, ep: Endpoint, req: Request, start: float) -> Outcome:
    """Send ``req``, stream its answer, and time every token chunk; never raises (but on cancel)."""
    out = Outcome(req.index, req.max_tokens, req.prompt_tokens, req.arrival_s)
    parser = parser_for(ep.api)
    url, body, headers = ep.url.rstrip("/") + ep.api.path, json.dumps(ep.payload(req)).encode(), ep.json_headers
    began = time.perf_counter()
    out.sent_s = began - start
    stamp = {"sent": began}  # set again by _on_body_sent when the request has left
    try:
        async with session.post(url, data=body, headers=headers, trace_request_ctx=stamp) as resp:
            sent = stamp["sent"]
            out.send_s = sent - began
            if resp.status != 200:
                said = " ".join((await resp.text(errors="replace"))[:120].split())
                out.error = f"HTTP {resp.status} {resp.reason or ''}: {said}".strip()
                return out
            async for data in resp.content.iter_any():
                out.chunks_s += [time.perf_counter() - sent] * parser.feed(data)
            parser.close()
    except MalformedStream as exc:
        out.error = str(exc)
    except asyncio.TimeoutError:
        out.error = f"timed out after serve.timeout_s={ep.timeout_s:g} s ({len(out.chunks_s)} chunks received)"
    except aiohttp.ClientConnectorError as exc:
        out.error = f"cannot connect to {exc.host}:{exc.port}: {exc.strerror or exc.os_error}"
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
        out.error = f"the server closed the connection before the answer ended ({len(out.chunks_s)} chunks received)"
    except (aiohttp.ClientError, OSError) as exc:
        out.error = f"{type(exc).__name__}: {' '.join(str(exc).split()) or 'connection lost'}"
    out.output_tokens = parser.output_tokens
    out.prompt_tokens_reported = parser.prompt_tokens
    out.text = "".join(parser.texts)
    if not out.error and not out.chunks_s:
        out.error = "the stream ended without a token"
    return out


async def _on_body_sent(session: aiohttp.ClientSession, ctx: object, params: object) -> None:
    ctx.trace_request_ctx["sent"] = time.perf_counter()  # type: ignore[attr-defined]


def _tracing() -> aiohttp.TraceConfig:
    """Stamps the moment a request's body is handed to the socket: the times of its chunks count from there,
    so the client's own cost of building a request (about 0.5 ms here) is not counted as the server's."""
    trace = aiohttp.TraceConfig()
    trace.on_request_chunk_sent.append(_on_body_sent)
    return trace


async def drive(ep: Endpoint, requests: list[Request], concurrency: int | None,
                warmup: list[Request] = ()) -> tuple[list[Outcome], float, list[Outcome]]:
    """Send ``warmup`` (at once, ``concurrency`` in flight: it opens the connections the load will use), then
    every request at its ``arrival_s`` with at most ``concurrency`` in flight (None: no cap). Returns the
    outcomes in request order, the wall time from the start of the load to the last answer, and the
    warm-up's outcomes."""
    connector = aiohttp.TCPConnector(limit=concurrency or 0, limit_per_host=0, keepalive_timeout=60)
    gate = asyncio.Semaphore(concurrency) if concurrency else None
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                                     timeout=aiohttp.ClientTimeout(total=ep.timeout_s),
                                     trace_configs=[_tracing()]) as session:
        async def one(req: Request) -> Outcome:
            if req.arrival_s > 0:
                await asyncio.sleep(start + req.arrival_s - time.perf_counter())
            if gate is None:
                return await send(session, ep, req, start)
            async with gate:
                return await send(session, ep, req, start)

        start = time.perf_counter()
        warm = await asyncio.gather(*(one(dataclasses.replace(r, arrival_s=0.0)) for r in warmup))
        start = time.perf_counter()
        outcomes = await asyncio.gather(*(one(r) for r in requests))
        return list(outcomes), time.perf_counter() - start, list(warm)


def run_load(ep: Endpoint, requests: list[Request], concurrency: int | None,
             warmup: list[Request] = ()) -> tuple[list[Outcome], float, list[Outcome]]:
    """:func:`drive` in a fresh event loop, with the garbage collector off (as the timing harness has it, and
    vLLM's benchmark freezes it): a collection of a large heap would stall every stream for milliseconds."""
    enabled = gc.isenabled()
    gc.freeze()
    gc.disable()
    try:
        return asyncio.run(drive(ep, requests, concurrency, warmup))
    finally:
        if enabled:
            gc.enable()
        gc.unfreeze()
