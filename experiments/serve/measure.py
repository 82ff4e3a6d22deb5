"""Run the serve experiment: a server (started here, or at ``serve.url``), one or more load levels, the
latency and throughput each gives, and every request in ``requests.csv``.

A point first sends one probe (not streamed, one token): it names the server, proves it answers, and
checks the first prompt's token count against the server's usage report. Then, per load level,
``warmup_requests`` unmeasured requests, then ``n_requests`` measured ones. A failed request is
counted, never dropped: a level with any failure is a failed row (its metrics kept), with the first
reason in one line.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass

import numpy as np

from experiments.framework.bench import BenchConfig
from experiments.framework.spec import Column, ConfigError, VariantResult
from experiments.serve import metrics, probe, reference, server_metrics
from experiments.serve.client import run_load
from experiments.serve.redact import Redactor
from experiments.serve.request import Endpoint
from experiments.serve.schema import KEY, Profile, ServeConfig
from experiments.serve.server import EmbeddedServer, server_binary
from experiments.serve.workload import Prompts, requests
from experiments.shared.model import model_file, read_model
from experiments.shared.requests import request_table
from experiments.shared.text import read_text

log = logging.getLogger(__name__)
SAMPLE_CHARS = 300  # of the sample's prompt kept in the row

COLUMNS = (
    Column("level_concurrency", "", "requests in flight at most at this level (empty: no cap); the level itself "
                                    "is the row's variant: `concurrency N`, `rate R/s`, `all at once`, and for "
                                    "profile=sweep `synchronous`, `throughput`, then rates"),
    *metrics.COLUMNS,
    Column("server_url", "", "where the requests went (the embedded server: 127.0.0.1 and a free port)"),
    Column("server_model", "", "the `model` field of the requests"),
    Column("server_version", "", "the server's version where it tells (`/version`, `/api/version`), or the "
                                 "embedded llama-cpp-python's"),
    Column("server_header", "", "the `Server` header of its answers"),
    Column("probe_prompt_tokens", "", "the server's count of the probe's prompt tokens (its usage report)"),
    Column("probe_prompt_tokens_known", "", "our count of the same prompt (the embedded model's tokenizer)"),
    Column("sample_prompt", "", "the end of one request's prompt (its last 300 characters): real text when the "
                                "served model is real, random words otherwise"),
    Column("sample_output", "", "what the server generated for that request, as streamed"),
    Column("model_reused", "", "embedded server: True when the model file was found in `serve.models_dir`"),
    *server_metrics.COLUMNS,
    *reference.COLUMNS,
)


@dataclass(frozen=True)
class Level:
    """One load level: the cap on requests in flight and the arrival rate (None or inf: all at once)."""

    label: str
    concurrency: int | None
    rate: float | None


def fixed_level(cfg: ServeConfig) -> Level:
    cap = cfg.concurrency
    if cfg.rate is None:
        return Level(f"concurrency {cap}" if cap else "all at once", cap, None)
    label = "all at once" if math.isinf(cfg.rate) else f"rate {cfg.rate:g}/s"
    return Level(label + (f", concurrency <= {cap}" if cap else ""), cap, cfg.rate)


def sweep_rates(sync: dict, peak: dict, n: int) -> list[float]:
    """GuideLLM's sweep: ``n`` rates evenly between the synchronous and the maximum request rates."""
    low, high = sync["request_throughput"], peak["request_throughput"]
    return [float(r) for r in np.linspace(low, max(high, low), n + 2)[1:-1]]


def run(cfg: ServeConfig, bench: BenchConfig, seed: int) -> list[VariantResult]:
    """Measure each load level of the point against its server; the API key (``serve.api_key_env``) is
    redacted from everything the point stores or logs."""
    redactor = Redactor(os.environ.get(cfg.api_key_env) if cfg.api_key_env else None)
    with redactor.logging():
        results = _run(cfg, seed)
    return [redactor.result(r) for r in results]


def _run(cfg: ServeConfig, seed: int) -> list[VariantResult]:
    rng = np.random.default_rng(seed)
    with contextlib.ExitStack() as stack:
        common: dict = {}
        server: EmbeddedServer | None = None
        prompts = Prompts()
        extra: dict = {"ignore_eos": True} if cfg.ignore_eos else {}
        name = cfg.model_name
        if cfg.url is None:
            path, reused = model_file(cfg, seed)
            shape, _ = read_model(path, KEY)
            n_ctx = cfg.n_ctx or shape.context
            vocab = probe.vocabulary(path)
            extra["logit_bias"] = {str(i): -100 for i in vocab.banned if cfg.ignore_eos or i != vocab.eos}
            tokens = np.array(vocab.tokenize(read_text("pydoc"))) if not cfg.made else None  # a real model: real text
            prompts = Prompts(vocab.count, tokens, vocab.detokenize)
            name = name or path.stem
            binary = server_binary(cfg)
            server = stack.enter_context(EmbeddedServer(path, name, n_ctx, cfg.n_threads, cfg.startup_timeout_s,
                                                        binary, cfg.parallel if binary else 1))
            common |= {"model_reused": reused, "server_kind": server.name, "server_parallel": server.parallel}
            url = server.url
        else:
            url = cfg.base_url
        headers = {}
        if cfg.api_key_env is not None:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise ConfigError(f"{KEY}.api_key_env={cfg.api_key_env}: that environment variable is not set")
            headers["Authorization"] = f"Bearer {key}"
        ep = Endpoint(url, cfg.api, name or "", headers, extra, cfg.timeout_s)
        try:
            ep, ident = probe.identify(ep, cfg, rng, prompts, server)
        except probe.Unreachable as exc:
            death = server.died() if server is not None else None  # a crash shows first as a lost connection
            return [VariantResult(fixed_level(cfg).label if cfg.profile is Profile.fixed else "probe",
                                  status="failed", error=f"{death}: {exc}" if death else str(exc))]
        common |= ident
        with_metrics = bool(server_metrics.read(ep.url))  # llama-server's /metrics (llama.cpp's names)
        levels = [fixed_level(cfg)] if cfg.profile is Profile.fixed else \
            [Level("synchronous", 1, None), Level("throughput", None, None)]
        results = []
        for i, level in enumerate(levels):
            results.append(_level(ep, cfg, level, rng, prompts, server, common, i * cfg.n_requests, with_metrics))
            if server is not None and server.exit_code() is not None:
                break  # the levels left would only fail to connect
            if cfg.profile is Profile.sweep and i == 1:
                if any(r.status != "ok" for r in results):
                    break
                rates = sweep_rates(results[0].metrics, results[1].metrics, cfg.n_rates)
                levels += [Level(f"rate {r:.3g}/s", None, r) for r in rates]
    if server is not None and server.binary is not None and cfg.reference:
        below = reference.measure(path, cfg.n_threads, cfg.prompt_len, cfg.output_len, server.parallel, seed)
        for r in results:
            r.metrics |= below
    return results


def _level(ep: Endpoint, cfg: ServeConfig, level: Level, rng: np.random.Generator, prompts: Prompts,
           server: EmbeddedServer | None, common: dict, first: int, with_metrics: bool) -> VariantResult:
    n = cfg.n_requests + cfg.warmup_requests  # lengths are drawn for all, so the first checks the context
    prompt_lens, outputs = cfg.draw_lengths(rng, cfg.prompt_len, n), cfg.draw_lengths(rng, cfg.output_len, n)
    due = np.concatenate([np.zeros(cfg.warmup_requests), cfg.draw_arrivals(rng, cfg.n_requests, level.rate)])
    if server is not None and (need := int((prompt_lens + outputs).max())) > server.n_ctx:
        raise ConfigError(f"a request of {need} tokens ({KEY}.prompt_len + {KEY}.output_len, as drawn) exceeds "
                          f"the context of a slot of the embedded server ({server.n_ctx} tokens, {KEY}.n_ctx)")
    reqs = requests(rng, prompt_lens, outputs, due, prompts, first)
    warm, load = reqs[:cfg.warmup_requests], reqs[cfg.warmup_requests:]
    log.info("%s: %d requests (%d warm-up)", level.label, len(load), len(warm))
    before: dict[str, float] = {}

    def read_before() -> None:
        before.update(server_metrics.read(ep.url))

    sampler = server_metrics.Sampler(ep.url)
    with sampler if with_metrics else contextlib.nullcontext():
        outcomes, duration, _ = run_load(ep, load, level.concurrency, warm, read_before if with_metrics else None)
    after = server_metrics.read(ep.url) if with_metrics else {}
    side = server_metrics.level_figures(before, after, duration, sampler.peaks)
    requested = level.rate if level.rate is not None else math.inf
    disagree = server_metrics.token_disagreements(outcomes, side.get("server_predicted_tokens"))
    row = {"level_concurrency": level.concurrency, **common,
           **metrics.summarize(outcomes, duration, requested, cfg.slo_ttft_ms, cfg.slo_tpot_ms), **side,
           "token_count_disagreements": disagree}
    sample = next((o for o in outcomes if o.ok and o.text.strip()), None)
    if sample is not None:  # one answer, as the server generated it, after the end of its prompt
        asked = next(r.prompt for r in load if r.index == sample.index)
        row |= {"sample_prompt": asked[-SAMPLE_CHARS:], "sample_output": sample.text}
    result = VariantResult(level.label, row, sidecars={"requests": request_table(metrics.records(outcomes))})
    failed = [o for o in outcomes if not o.ok]
    if server is not None and (death := server.died(1.0 if failed else 0.0)) is not None:
        result.status = "failed"
        result.error = (f"{death} during the load: {len(failed)} of {len(outcomes)} requests failed, the first "
                        f"with: {failed[0].error if failed else '-'}")
    elif failed:
        result.status = "failed"
        result.error = f"{len(failed)} of {len(outcomes)} requests failed, the first with: {failed[0].error}"
    return result


def summary(results: list[VariantResult]) -> str:
    parts = []
    for r in results:
        m = r.metrics
        if r.status == "ok":
            parts.append(f"{r.variant}: {m['output_throughput']:.1f} tok/s, TTFT p50 {m['median_ttft_ms']:.0f} ms, "
                         f"TPOT p50 {m['median_tpot_ms']:.1f} ms")
    return "; ".join(parts) or "no load level completed"
