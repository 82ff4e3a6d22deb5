"""Knobs of the serve experiment, under ``serve.*``: each default written once, here.

With ``serve.url`` null the point starts its own server (llama.cpp's, from llama-cpp-python, on a model
made as the engine experiment makes them): the model knobs act. With a URL they do not; the point
measures whatever answers there.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from experiments.framework.spec import knob, require, require_positive
from experiments.serve.streams import Api
from experiments.shared.model import ModelKnobs
from experiments.shared.trace import TraceKnobs, trace_knob
from infer_core.serving.traces import Lengths

KEY = "serve"
EMBEDDED_ONLY = frozenset({"model", "shape", "weights", "pure", "file", "threads", "n_ctx", "models_dir",
                           "startup_timeout_s", "server", "parallel", "reference"})


class Server(Enum):
    llama_server = "llama_server"  # llama.cpp's own llama-server (make tools): slots, continuous batching, /metrics
    llama_cpp_python = "llama_cpp_python"  # llama-cpp-python's server: one request at a time


class Profile(Enum):
    fixed = "fixed"  # one load level: serve.concurrency and serve.rate
    sweep = "sweep"  # GuideLLM's sweep: synchronous, then maximum throughput, then rates between them


@dataclass
class ServeConfig(ModelKnobs, TraceKnobs):
    """A load of streamed requests against one server: the latency and throughput it gives. The model knobs are
    the embedded server's (``serve.url`` null)."""

    key: ClassVar[str] = KEY
    n_requests: int = trace_knob("n_requests", 32)
    prompt_len: int = trace_knob("prompt_len", 64)
    output_len: int = trace_knob("output_len", 32)
    lengths: Lengths = trace_knob("lengths", Lengths.fixed)

    url: str | None = knob(None, "base URL of a running server (`http://127.0.0.1:11434` for Ollama, "
                                 "`http://127.0.0.1:8000` for vLLM); null: start llama.cpp's server on a made model")
    api: Api = knob(Api.openai_completions, "`openai_completions`, `openai_chat` or `ollama_generate`")
    model_name: str | None = knob(None, "the `model` field of each request; null: the first model the server "
                                        "lists (required for Ollama)")
    api_key_env: str | None = knob(None, "name of the environment variable holding the API key (the key itself "
                                         "is never in a config, row or log)")
    server: Server = knob(Server.llama_server, "embedded server: `llama_server` (llama.cpp's llama-server, built by "
                                               "`make tools`; without them the point falls back, saying so) or "
                                               "`llama_cpp_python` (llama-cpp-python's)")
    parallel: int = knob(1, "embedded llama-server: slots (`-np`), requests decoded together by continuous batching")
    n_ctx: int | None = knob(None, "embedded server: context size per slot; null: the model's")
    reference: bool = knob(True, "embedded llama-server: after the load, run llama-batched-bench on the same file, "
                                 "threads and lengths, at batch 1 and `parallel` (the layers reconciled in the report)")
    startup_timeout_s: float = knob(120.0, "embedded server: how long to wait for it to answer")
    profile: Profile = knob(Profile.fixed, "`fixed`: one load level; `sweep`: synchronous, maximum throughput, "
                                           "then `n_rates` rates between (as GuideLLM's sweep)")
    concurrency: int | None = knob(1, "requests in flight at most (closed loop when `rate` is null); null: no cap")
    n_rates: int = knob(4, "profile=sweep: rates between the synchronous and the maximum throughput")
    warmup_requests: int = knob(2, "requests sent first and not measured (they also open the connections)")
    timeout_s: float = knob(60.0, "a request not answered in full within this many seconds fails")
    ignore_eos: bool = knob(True, "ask the server to ignore the end of text (`ignore_eos`: vLLM, llama.cpp), so "
                                  "answers run to max_tokens; the embedded server also bans it by logit_bias")
    slo_ttft_ms: float | None = knob(1000.0, "SLO on time to first token, for goodput and the knee; null: none")
    slo_tpot_ms: float | None = knob(100.0, "SLO on time per output token, for goodput and the knee; null: none")

    def __post_init__(self) -> None:
        self.check_trace()
        require_positive(KEY, self, "n_rates", "parallel")
        require_positive(KEY, self, "warmup_requests", minimum=0)
        for name in ("timeout_s", "startup_timeout_s"):
            require(getattr(self, name) > 0, f"{KEY}.{name}={getattr(self, name)} must be > 0")
        require(self.concurrency is None or self.concurrency >= 1,
                f"{KEY}.concurrency={self.concurrency} must be >= 1, or null for no cap")
        for name in ("slo_ttft_ms", "slo_tpot_ms"):
            value = getattr(self, name)
            require(value is None or value > 0, f"{KEY}.{name}={value} must be > 0, or null")
        if self.url is None:
            require(self.api is not Api.ollama_generate, f"{KEY}.api=ollama_generate needs {KEY}.url: the embedded "
                                                         "llama.cpp server speaks the OpenAI API")
            self.check_model()
            require(self.n_ctx is None or self.n_ctx >= 1, f"{KEY}.n_ctx={self.n_ctx} must be >= 1, or null")
            require(self.parallel == 1 or self.server is Server.llama_server,
                    f"{KEY}.parallel={self.parallel} needs {KEY}.server=llama_server: llama-cpp-python's server "
                    "answers one request at a time")
        else:
            require(self.url.startswith(("http://", "https://")), f"{KEY}.url={self.url!r} must start with "
                                                                   "http:// or https://")
            require(self.api is not Api.ollama_generate or self.model_name is not None,
                    f"{KEY}.api=ollama_generate needs {KEY}.model_name (the model Ollama should run)")

    def inactive(self) -> frozenset[str]:
        skip = set(EMBEDDED_ONLY) if self.url is not None else set()
        if self.url is None:
            skip |= self.model_inactive()
            if self.server is Server.llama_cpp_python:
                skip |= {"parallel", "reference"}
        skip |= self.trace_inactive()
        if self.profile is Profile.sweep:
            skip |= {"concurrency", "rate", "burstiness"}
        else:
            skip.add("n_rates")
        if self.api_key_env is None:
            skip.add("api_key_env")
        return frozenset(skip)

    @property
    def base_url(self) -> str | None:
        """``serve.url`` as the server's root: an OpenAI client's base URL (``…/v1``) is accepted as the same."""
        if self.url is None:
            return None
        url = self.url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url
