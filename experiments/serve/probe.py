"""Before the load: the embedded model's vocabulary, and one probe request that names the server.

The probe (not streamed, one output token) proves the server answers, fills in the model name when
``serve.model_name`` is null (the first of ``/v1/models``), reads the server's version and ``Server``
header, and compares the server's count of the prompt's tokens (its usage report) with ours.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np

from experiments.serve.request import Endpoint, Request
from experiments.serve.schema import KEY, ServeConfig
from experiments.serve.server import EmbeddedServer
from experiments.serve.streams import Api
from experiments.serve.workload import Counter, Prompts
from experiments.shared.llama_build import check_build

log = logging.getLogger(__name__)


class Unreachable(RuntimeError):
    """The server did not answer the probe: the point fails with this one line."""


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """The embedded model's tokenizer: a prompt token counter (the server adds BOS as it does), ``tokenize`` and
    ``detokenize``; the tokens that do not decode to printable text by themselves (control tokens, end of text,
    partial UTF-8 bytes), and the end-of-text token."""

    count: Counter
    tokenize: Callable[[str], list[int]]
    detokenize: Callable[[list[int]], str]
    banned: list[int]
    eos: int


def vocabulary(path: Path) -> Vocabulary:
    """The vocabulary of the model file ``path``, read by llama.cpp."""
    import llama_cpp
    from llama_cpp._utils import suppress_stdout_stderr

    check_build()  # the embedded server runs the same build
    with suppress_stdout_stderr(disable=False):  # llama.cpp prints while loading, even a vocabulary
        llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    banned = []
    for token in range(llm.n_vocab()):
        try:
            text = llm.detokenize([token]).decode()
        except UnicodeDecodeError:
            banned.append(token)
            continue
        if not text or not text.isprintable():
            banned.append(token)
    return Vocabulary(lambda text: len(llm.tokenize(text.encode(), add_bos=True, special=True)),
                      lambda text: llm.tokenize(text.encode(), add_bos=False, special=False),
                      lambda ids: llm.detokenize(ids).decode(errors="replace"), banned, llm.token_eos())


async def _get_json(session: aiohttp.ClientSession, url: str) -> dict | None:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
            return await resp.json(content_type=None) if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def _identify(ep: Endpoint, req: Request, embedded: bool) -> tuple[Endpoint, dict]:
    base = ep.url.rstrip("/")
    async with aiohttp.ClientSession(headers=ep.headers) as session:
        try:
            if not ep.model and ep.api is not Api.ollama_generate:
                async with session.get(f"{base}/v1/models", timeout=aiohttp.ClientTimeout(total=ep.timeout_s)) as r:
                    if r.status != 200:
                        said = " ".join((await r.text(errors="replace"))[:120].split())
                        raise Unreachable(f"{base}/v1/models answered HTTP {r.status} {r.reason or ''}: {said}"
                                          + (f" (check {KEY}.api_key_env)" if r.status in (401, 403) else
                                             f" (is {KEY}.url the server's root? or set {KEY}.model_name)"))
                    models = (await r.json(content_type=None)).get("data") or []
                if not models:
                    raise Unreachable(f"{base}/v1/models lists no model: set {KEY}.model_name")
                ep = dataclasses.replace(ep, model=str(models[0].get("id")))
            async with session.post(base + ep.api.path, json=ep.payload(req, stream=False),
                                    timeout=aiohttp.ClientTimeout(total=ep.timeout_s)) as resp:
                text = await resp.text(errors="replace")
                if resp.status != 200:
                    raise Unreachable(f"the server at {base} answered the probe with HTTP {resp.status}: "
                                      f"{' '.join(text[:120].split())}")
                header = resp.headers.get("Server", "")
        except aiohttp.ClientConnectorError as exc:
            raise Unreachable(f"cannot connect to {base} ({KEY}.url): {exc.strerror or exc.os_error}") from None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise Unreachable(f"the probe of {base} failed: {type(exc).__name__}: {exc}") from None
        try:
            body = json.loads(text)
        except ValueError:
            raise Unreachable(f"the server at {base} answered the probe with no JSON: {text[:80]!r}") from None
        usage = body.get("usage") or {}
        counted = usage.get("prompt_tokens", body.get("prompt_eval_count"))
        version = None
        if not embedded:
            for path, field in (("/version", "version"), ("/api/version", "version"), ("/props", "build_info")):
                if (found := await _get_json(session, base + path)) and field in found:
                    version = str(found[field]) if field == "version" else f"llama-server {found[field]}"
                    break
    return ep, {"server_url": base, "server_model": ep.model, "server_version": version, "server_header": header,
                "probe_prompt_tokens": counted, "probe_prompt_tokens_known": req.prompt_tokens}


def identify(ep: Endpoint, cfg: ServeConfig, rng: np.random.Generator, prompts: Prompts,
             server: EmbeddedServer | None) -> tuple[Endpoint, dict]:
    """The endpoint with its model name, and the server's identity columns; :class:`Unreachable` if it fails."""
    text, known = prompts(rng, cfg.prompt_len)
    # llama-cpp-python's server does not say its version; llama-server, embedded or not, says it in /props
    own_python_server = server is not None and server.binary is None
    ep, ident = asyncio.run(_identify(ep, Request(-1, text, known, 1), own_python_server))
    if own_python_server:
        import llama_cpp

        ident["server_version"] = f"llama-cpp-python {llama_cpp.__version__}"
    if known is not None and ident["probe_prompt_tokens"] not in (None, known):
        log.warning("the server counts %s prompt tokens where the model's tokenizer counts %d%s",
                    ident["probe_prompt_tokens"], known,
                    " (the chat template adds its own)" if cfg.api is Api.openai_chat else "")
    return ep, ident
