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
import time
from collections.abc import Callable

import aiohttp

from experiments.serve.request import Endpoint, Outcome, Request
from experiments.serve.streams import MalformedStream, parser_for

#: Idle pooled connections are closed after this long: below the 5 s after which llama-server (cpp-httplib) and
#: uvicorn close an idle keep-alive connection, so the client does not reuse one the server is closing.
KEEPALIVE_S = 4.0
#: Resends of one request on pooled connections found closed; each drops that connection, so the pool's size is
#: enough (one more try then lands on a new connection, whose failure is a failure).
RESEND_LIMIT = 64


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
                out: Outcome) -> tuple[aiohttp.ClientResponse, float]:
    """POST and wait for the answer's headers, and the moment the body left. A request that fails on a *reused*
    connection before any byte of an answer arrived was never received (the server had closed that connection
    while it sat in the pool): the connection is dropped and the request is sent again, as HTTP clients do for a
    connection closed while idle (RFC 9112 § 9.3.1). llama-server closes every connection after a streamed
    answer although its headers say ``Keep-Alive``; the count of such resends is ``out.resent``."""
    while True:
        stamp = {"sent": time.perf_counter(), "reused": False}  # set again by the tracing hooks
        try:
            resp = await session.post(url, data=body, headers=headers, trace_request_ctx=stamp)
            return resp, stamp["sent"]
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            if not stamp["reused"] or out.resent >= RESEND_LIMIT:
                raise
            out.resent += 1


async def send(session: aiohttp.ClientSession, ep: Endpoint, req: Request, start: float) -> Outcome:
    """Send ``req``, stream its answer, and time every token chunk; never raises (but on cancel)."""
    out = Outcome(req.index, req.max_tokens, req.prompt_tokens, req.arrival_s)
    parser = parser_for(ep.api)
    url, body, headers = ep.url.rstrip("/") + ep.api.path, json.dumps(ep.payload(req)).encode(), ep.json_headers
    began = time.perf_counter()
    out.sent_s = began - start
    try:
        resp, sent = await _post(session, url, body, headers, out)
        async with resp:
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
    out.output_tokens, out.token_chunks, out.usage_tokens = parser.output_tokens, parser.chunks, parser.usage_output
    out.prompt_tokens_reported = parser.prompt_tokens
    out.text = "".join(parser.texts)
    if not out.error and not out.chunks_s:
        out.error = "the stream ended without a token"
    return out


async def _on_body_sent(session: aiohttp.ClientSession, ctx: object, params: object) -> None:
    ctx.trace_request_ctx["sent"] = time.perf_counter()  # type: ignore[attr-defined]


async def _on_reuse(session: aiohttp.ClientSession, ctx: object, params: object) -> None:
    ctx.trace_request_ctx["reused"] = True  # type: ignore[attr-defined]


def _tracing() -> aiohttp.TraceConfig:
    """Stamps the moment a request's body is handed to the socket: the times of its chunks count from there,
    so the client's own cost of building a request (about 0.5 ms here) is not counted as the server's; and
    marks a request sent on a pooled connection."""
    trace = aiohttp.TraceConfig()
    trace.on_request_chunk_sent.append(_on_body_sent)
    trace.on_connection_reuseconn.append(_on_reuse)
    return trace


async def drive(ep: Endpoint, requests: list[Request], concurrency: int | None,
                warmup: list[Request] = (), on_start: Callable[[], None] | None = None
                ) -> tuple[list[Outcome], float, list[Outcome]]:
    """Send ``warmup`` (at once, ``concurrency`` in flight: it opens the connections the load will use), call
    ``on_start`` (the server's metrics are read there), then send every request at its ``arrival_s`` with at most
    ``concurrency`` in flight (None: no cap). Returns the outcomes in request order, the wall time from the start
    of the load to the last answer, and the warm-up's outcomes."""
    connector = aiohttp.TCPConnector(limit=concurrency or 0, limit_per_host=0, keepalive_timeout=KEEPALIVE_S)
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
        if on_start is not None:
            on_start()
        start = time.perf_counter()
        outcomes = await asyncio.gather(*(one(r) for r in requests))
        return list(outcomes), time.perf_counter() - start, list(warm)


def run_load(ep: Endpoint, requests: list[Request], concurrency: int | None, warmup: list[Request] = (),
             on_start: Callable[[], None] | None = None) -> tuple[list[Outcome], float, list[Outcome]]:
    """:func:`drive` in a fresh event loop, with the garbage collector off (as the timing harness has it, and
    vLLM's benchmark freezes it): a collection of a large heap would stall every stream for milliseconds."""
    enabled = gc.isenabled()
    gc.freeze()
    gc.disable()
    try:
        return asyncio.run(drive(ep, requests, concurrency, warmup, on_start))
    finally:
        if enabled:
            gc.enable()
        gc.unfreeze()
