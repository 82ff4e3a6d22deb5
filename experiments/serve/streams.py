"""Streamed answers, bytes in, token chunks out: OpenAI's server-sent events and Ollama's JSON lines.

A parser is fed whatever bytes arrived and says how many chunks carrying tokens they completed.
It copes with what real servers send: several events in one read and one event over several
reads, ``\\r\\n`` line ends, keep-alive comments (``: ping``), ``[DONE]``, a usage report in the last
event (OpenAI's ``stream_options.include_usage``) or in Ollama's ``done`` line. Counts come from
the server's usage report when it gives one, else one token per token chunk: never from the text,
whose pieces may be empty (a byte token) or hold several tokens.
"""

from __future__ import annotations

import json
from enum import Enum


class Api(Enum):
    """The request and stream format of a server."""

    openai_completions = "openai_completions"  # POST /v1/completions, SSE
    openai_chat = "openai_chat"  # POST /v1/chat/completions, SSE
    ollama_generate = "ollama_generate"  # POST /api/generate, newline-delimited JSON

    @property
    def path(self) -> str:
        return {"openai_completions": "/v1/completions", "openai_chat": "/v1/chat/completions",
                "ollama_generate": "/api/generate"}[self.value]


class MalformedStream(ValueError):
    """The server sent something that is not the format of its API."""


class _Lines:
    """Bytes to complete lines (without ``\\r\\n``), however the bytes were cut."""

    def __init__(self) -> None:
        self.rest = b""

    def feed(self, data: bytes) -> list[bytes]:
        lines = (self.rest + data).split(b"\n")
        self.rest = lines.pop()
        return [line.rstrip(b"\r") for line in lines]


_DECODER = json.JSONDecoder()


def _json(raw: bytes) -> dict:
    try:
        obj = _DECODER.decode(raw.decode())
    except ValueError:  # UnicodeDecodeError included
        raise MalformedStream(f"malformed chunk: {raw[:80].decode(errors='replace')!r}") from None
    if not isinstance(obj, dict):
        raise MalformedStream(f"malformed chunk: {raw[:80].decode(errors='replace')!r} is not a JSON object")
    return obj


class Parser:
    """Common state: token chunks seen and their text, the server's counts, whether the stream said it ended."""

    def __init__(self) -> None:
        self.lines = _Lines()
        self.chunks = 0
        self.texts: list[str] = []
        self.usage_output: int | None = None
        self.prompt_tokens: int | None = None
        self.done = False

    @property
    def output_tokens(self) -> int:
        return self.usage_output if self.usage_output is not None else self.chunks

    def feed(self, data: bytes) -> int:
        """Parse ``data``; the number of token chunks it completed."""
        before = self.chunks
        for line in self.lines.feed(data):
            self.line(line)
        return self.chunks - before

    def line(self, line: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """The connection ended: a stream that never said it was done was cut short."""
        if self.lines.rest.strip():
            self.line(self.lines.rest.rstrip(b"\r"))
            self.lines.rest = b""
        if not self.done:
            raise MalformedStream(f"the stream ended before it was done ({self.chunks} token chunks received)")


class OpenAIStream(Parser):
    """Server-sent events of ``/v1/completions`` (``text``) or ``/v1/chat/completions`` (``delta``)."""

    def __init__(self, chat: bool) -> None:
        super().__init__()
        self.chat = chat
        self.data: list[bytes] = []

    def line(self, line: bytes) -> None:
        if line.startswith(b"data:"):
            self.data.append(line[5:].removeprefix(b" "))
        elif not line:  # a blank line ends an event
            if self.data:
                self.event(b"\n".join(self.data) if len(self.data) > 1 else self.data[0])
                self.data = []
        elif line.startswith(b":"):  # a comment: keep-alive
            return
        elif not line.startswith((b"event:", b"id:", b"retry:")):
            raise MalformedStream(f"malformed chunk: {line[:80].decode(errors='replace')!r} is not an SSE field")

    def close(self) -> None:
        if self.data:  # a last event without its blank line
            self.event(b"\n".join(self.data))
            self.data = []
        super().close()

    def event(self, payload: bytes) -> None:
        if payload.strip() == b"[DONE]":
            self.done = True
            return
        obj = _json(payload)
        if "error" in obj:
            raise MalformedStream(f"the server reported an error: {' '.join(str(obj['error']).split())[:120]}")
        if usage := obj.get("usage"):
            self.usage_output = usage.get("completion_tokens", self.usage_output)
            self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
        for choice in obj.get("choices") or ():
            if self._carries_tokens(choice):
                self.chunks += 1
                self.texts.append((choice.get("delta") or {}).get("content", "") if self.chat else choice["text"])

    def _carries_tokens(self, choice: dict) -> bool:
        """A chunk carries tokens unless it only closes the stream (empty text with a finish reason) or,
        in a chat, only announces the assistant's role."""
        if self.chat:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if not isinstance(text, str) or (text == "" and ("role" in delta or choice.get("finish_reason"))):
                return False
            return True
        text = choice.get("text")
        return isinstance(text, str) and (text != "" or choice.get("finish_reason") is None)


class OllamaStream(Parser):
    """Ollama's ``/api/generate``: one JSON object per line, one token per line until ``done``."""

    def line(self, line: bytes) -> None:
        if not line.strip():
            return
        obj = _json(line)
        if "error" in obj:
            raise MalformedStream(f"the server reported an error: {' '.join(str(obj['error']).split())[:120]}")
        if obj.get("response") or not obj.get("done"):
            self.chunks += 1
            self.texts.append(str(obj.get("response") or ""))
        if obj.get("done"):
            self.done = True
            self.usage_output = obj.get("eval_count", self.usage_output)
            self.prompt_tokens = obj.get("prompt_eval_count", self.prompt_tokens)


def parser_for(api: Api) -> Parser:
    return OllamaStream() if api is Api.ollama_generate else OpenAIStream(chat=api is Api.openai_chat)
