"""A scripted streaming server: programmed delays and faults, for checking the client, not a model.

``python -m experiments.serve.scripted --ttft-ms 20 --itl-ms 5`` listens on 127.0.0.1 (a free port, printed as
``listening on http://127.0.0.1:PORT``) and answers ``/v1/completions``, ``/v1/chat/completions`` and
``/api/generate`` with ``max_tokens`` (``num_predict``) words: the first chunk ``ttft`` after the request arrived,
then a chunk of ``tokens_per_chunk`` words every ``tokens_per_chunk × itl``, each on its own deadline (timers, not
accumulated sleeps), then a usage report. ``--fault`` makes every ``--fault-every``-th request misbehave as real
servers do. It is a bare asyncio protocol (HTTP/1.1, keep-alive, chunked bodies) rather than a web framework: a test
server must cost the machine little, so that what the client measures is the script.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import selectors
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from experiments.serve.script import Script, parse_args, script_chunks

REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class ScriptedHTTP(asyncio.Protocol):
    """One connection: requests read one after another, each answered on the script's schedule."""

    served = 0  # requests answered by this process, for ``fault_every``
    lead = 0.0  # how late the loop's timers fire (median, seconds): chunks are set that much early
    _tick: float | None = None

    def __init__(self, script: Script) -> None:
        self.script = script
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.plan: list[tuple[float, bytes | None, bool]] = []  # (due, data, last), the next one last
        self.timer: asyncio.TimerHandle | None = None

    @classmethod
    def tick(cls) -> float:
        """When the loop found this data ready: the time of the first read of this turn of the loop, shared by
        every connection read in the same turn (reading and handling one request takes about 0.1 ms here;
        stamping each when its turn came would make the last of a burst of requests look later than it was)."""
        if cls._tick is None:
            loop = asyncio.get_running_loop()
            cls._tick = loop.time()
            loop.call_soon(cls._untick)
        return cls._tick

    @classmethod
    def _untick(cls) -> None:
        cls._tick = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        self.arrived = self.tick()  # the schedule counts from the request's arrival
        self.buf += data
        while not self.busy and b"\r\n\r\n" in self.buf:
            head, rest = self.buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:] if ":" in x)}
            size = int(headers.get("content-length", 0))
            if len(rest) < size:
                return
            self.buf = rest[size:]
            method, path = lines[0].split()[:2]
            self.handle(method, path, headers, rest[:size])

    def send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
                             % (status, REASONS[status].encode(), content_type.encode(), len(body), body))

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        s = self.script
        refused = json.dumps({"error": f"Incorrect API key provided: {headers.get('authorization', '')}"}).encode()
        if s.api_key is not None and headers.get("authorization") != f"Bearer {s.api_key}":
            return self.send(401, refused)
        if method == "GET" and path == "/v1/models":
            return self.send(200, json.dumps({"object": "list", "data": [{"id": "scripted"}]}).encode())
        if path not in ("/v1/completions", "/v1/chat/completions", "/api/generate"):
            return self.send(404, b'{"error": "no such path"}')
        ScriptedHTTP.served += 1
        fault = s.fault if s.fault != "none" and ScriptedHTTP.served % s.fault_every == 0 else "none"
        if fault in ("http429", "http500"):
            return self.send(int(fault[4:]), json.dumps({"error": f"scripted {fault[4:]}"}).encode())
        if fault == "http401":  # as OpenAI's API does, the refused key quoted back (a client must not store it)
            return self.send(401, refused)
        req = json.loads(body)
        ollama = path == "/api/generate"
        n = int(req.get("options", {}).get("num_predict", 16) if ollama else req.get("max_tokens", 16))
        said = req.get("prompt") or " ".join(str(m.get("content", "")) for m in req.get("messages", ()))
        prompt_tokens = len(said.split())  # one token per word
        if not req.get("stream", ollama):  # not streamed (a probe): the whole answer at once
            text = "".join(f" w{i}" for i in range(n))
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}
            return self.send(200, json.dumps(
                {"response": text, "done": True, "eval_count": n, "prompt_eval_count": prompt_tokens} if ollama else
                {"choices": [{"index": 0, "text": text, "finish_reason": "length"}], "usage": usage}).encode())
        kind = b"application/x-ndjson" if ollama else b"text/event-stream"
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n" % kind)
        self.busy = True
        chunks: list[bytes | None] = list(script_chunks(path, n, s.tokens_per_chunk, s.ping, prompt_tokens))
        end = len(chunks) - 1 if fault in ("none", "close") else -1  # the chunk that ends the answer (-1: none)
        chunks += [b"cut"] if fault == "close" else []  # as llama-server does: the answer whole, then closed unsaid
        if fault not in ("none", "close"):  # in the middle of the stream, and nothing after it
            half = len(chunks) // 2
            chunks[half:] = [{"malformed": b'{"response": "w\n' if ollama else b'data: {"choices": [{"text": "w\n\n',
                              "stall": None, "cut": b"cut"}[fault]]
        step = s.tokens_per_chunk * s.itl_ms / 1e3
        due = self.arrived + s.ttft_ms / 1e3
        self.plan = [(due + j * step, data, j == end) for j, data in enumerate(chunks)]
        self.plan.reverse()
        self.timer = asyncio.get_running_loop().call_at(self.plan[-1][0] - self.lead, self.emit)

    def emit(self) -> None:
        """Send the next chunk of the plan and set the timer of the one after (timers due at the same
        moment may run in any order; a chain keeps the chunks in order)."""
        assert self.transport is not None
        _, data, last = self.plan.pop()
        if data is None:  # stall: say nothing more until the client gives up
            return
        if data == b"cut":
            return self.transport.close()
        self.transport.write(_chunk(data) + (b"0\r\n\r\n" if last else b""))
        if self.plan:
            self.timer = asyncio.get_running_loop().call_at(self.plan[-1][0] - self.lead, self.emit)
        elif last:
            self.busy = False
            if b"\r\n\r\n" in self.buf:
                self.data_received(b"")


async def timer_lateness(n: int = 30) -> float:
    """Median lateness of this loop's 5 ms timers, in seconds (a few tenths of a millisecond on a VM)."""
    loop, late = asyncio.get_running_loop(), []
    for _ in range(n):
        due, fired = loop.time() + 0.005, loop.create_future()
        loop.call_at(due, lambda f=fired: f.set_result(loop.time()))
        late.append(await fired - due)
    return sorted(late)[n // 2]


async def serve(script: Script, port: int = 0) -> tuple[asyncio.AbstractServer, int]:
    """Start a scripted server on 127.0.0.1 in the running loop; the server and its port."""
    loop = asyncio.get_running_loop()
    ScriptedHTTP.lead = await timer_lateness()
    server = await loop.create_server(lambda: ScriptedHTTP(script), "127.0.0.1", port, backlog=1024)
    return server, server.sockets[0].getsockname()[1]


@contextlib.contextmanager
def spawn(*args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run a scripted server in its own process (``args``: this module's options); yields its URL and process,
    and stops it on leaving."""
    proc = subprocess.Popen([sys.executable, "-m", "experiments.serve.scripted", *args], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("listening on "):
            raise RuntimeError(f"the scripted server did not start: {line!r}")
        yield line.split()[-1], proc
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    script, port = parse_args(sys.argv[1:])

    async def run() -> None:
        server, bound = await serve(script, port)
        print(f"listening on http://127.0.0.1:{bound}", flush=True)
        async with server:
            await server.serve_forever()

    # select() rather than epoll: epoll_wait() takes whole milliseconds and rounds a timer's wait up, which
    # makes chunks late by up to 1 ms at random; select() waits to the microsecond (1024 connections at most).
    with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(selectors.SelectSelector())) as runner:
        runner.run(run())


if __name__ == "__main__":
    main()
