"""Serving metrics of one load level, defined as ``vllm bench serve`` defines them
(``vllm/benchmarks/serve.py``, ``calculate_metrics``; the timing of a request in
``vllm/benchmarks/lib/endpoint_request_func.py``):

- TTFT: from sending a request to its first chunk carrying a token;
- ITL: the gaps between consecutive token chunks, over every request (a chunk may carry several tokens);
- TPOT per request: (E2EL − TTFT) / (output tokens − 1), for requests of more than one token;
- E2EL: from sending a request to its last token chunk;
- throughputs: completed requests, output tokens and prompt + output tokens, each over the duration of
  the load (its start to its last answer);
- goodput: completed requests meeting every SLO given (TTFT ≤ ``slo_ttft_ms``, TPOT ≤ ``slo_tpot_ms``,
  a single-token request counting TPOT 0) per second.

Percentiles are NumPy's (linear interpolation). Failed requests count in ``failed`` and nowhere else.
"""

from __future__ import annotations

import math

import numpy as np

from experiments.framework.spec import Column
from experiments.serve.request import Outcome
from experiments.shared.requests import RequestRecord

STATS = ("mean", "median", "p90", "p99")
LATENCIES = {"ttft": "time to first token", "tpot": "time per output token after the first",
             "itl": "inter-token latency (gap between token chunks)", "e2el": "end-to-end latency"}

COLUMNS = (
    Column("completed", "", "requests answered in full"),
    Column("failed", "", "requests that failed (HTTP error, refused or dropped connection, malformed stream, "
                         "timeout); their reasons are in requests.csv"),
    Column("short_outputs", "", "completed requests that returned fewer tokens than asked"),
    Column("duration_s", "s", "from the start of the load to its last answer"),
    Column("requested_rate", "req/s", "the arrival rate asked for (inf: all at once)"),
    Column("achieved_rate", "req/s", "requests sent per second between the first and the last send"),
    Column("max_in_flight", "", "most requests in flight at once", kind="measurement"),
    Column("mean_in_flight", "", "requests in flight on average: the sum of their times in flight / duration "
                                 "(the load the level offered; Little's law)", kind="measurement"),
    Column("request_throughput", "req/s", "completed / duration"),
    Column("output_throughput", "tok/s", "output tokens of completed requests / duration"),
    Column("total_token_throughput", "tok/s", "(prompt + output tokens) of completed requests / duration"),
    Column("total_input_tokens", "", "prompt tokens of completed requests (the server's count when it gives one)"),
    Column("total_output_tokens", "", "output tokens of completed requests (the server's count when it gives one, "
                                      "else token chunks)"),
    *(Column(f"{stat}_{name}_ms", "ms", f"{stat} {meaning}") for name, meaning in LATENCIES.items() for stat in STATS),
    Column("request_goodput", "req/s", "completed requests meeting every SLO given, per second (empty: no SLO)"),
    Column("good_requests", "", "completed requests meeting every SLO given"),
    Column("prompt_tokens_checked", "", "completed requests whose prompt token count the server reported"),
    Column("prompt_tokens_match", "", "share of those whose count equals the prompt's known length"),
    Column("client_send_ms", "ms", "median time the client took to build and write a request (not in TTFT)"),
    Column("resends", "", "requests sent again because the pooled connection they went out on had been closed by "
                          "the server before any answer (llama-server closes it after every streamed answer)"),
)


def _stats(name: str, values: list[float]) -> dict[str, float]:
    if not values:
        return {f"{stat}_{name}_ms": math.nan for stat in STATS}
    ms = 1e3 * np.asarray(values, dtype=np.float64)
    return {f"mean_{name}_ms": float(ms.mean()), f"median_{name}_ms": float(np.median(ms)),
            f"p90_{name}_ms": float(np.percentile(ms, 90)), f"p99_{name}_ms": float(np.percentile(ms, 99))}


def max_in_flight(outcomes: list[Outcome]) -> int:
    """Most requests in flight at once (send to last chunk, half-open intervals)."""
    events = sorted([(o.sent_s, 1) for o in outcomes] +
                    [(o.sent_s + o.send_s + (o.e2el_s if o.chunks_s else 0.0), -1) for o in outcomes])
    peak = level = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def summarize(outcomes: list[Outcome], duration_s: float, requested_rate: float,
              slo_ttft_ms: float | None = None, slo_tpot_ms: float | None = None) -> dict[str, float | int]:
    """The row of one load level from its requests."""
    ok = [o for o in outcomes if o.ok]
    prompt = [o.prompt_tokens_reported if o.prompt_tokens_reported is not None else (o.prompt_tokens or 0)
              for o in ok]
    output = sum(o.output_tokens for o in ok)
    sent = sorted(o.sent_s for o in outcomes)
    checked = [o for o in ok if o.prompt_tokens_reported is not None and o.prompt_tokens is not None]
    row: dict[str, float | int] = {
        "completed": len(ok), "failed": len(outcomes) - len(ok),
        "short_outputs": sum(o.output_tokens < o.max_tokens for o in ok),
        "duration_s": duration_s, "requested_rate": requested_rate,
        "achieved_rate": (len(sent) - 1) / (sent[-1] - sent[0]) if len(sent) > 1 and sent[-1] > sent[0] else math.nan,
        "max_in_flight": max_in_flight(outcomes),
        "mean_in_flight": sum(o.send_s + o.e2el_s for o in ok) / duration_s,
        "request_throughput": len(ok) / duration_s, "output_throughput": output / duration_s,
        "total_token_throughput": (sum(prompt) + output) / duration_s,
        "total_input_tokens": sum(prompt), "total_output_tokens": output,
        **_stats("ttft", [o.ttft_s for o in ok]),
        **_stats("tpot", [o.tpot_s for o in ok if o.output_tokens > 1]),
        **_stats("itl", [gap for o in ok for gap in o.itl_s]),
        **_stats("e2el", [o.e2el_s for o in ok]),
        "prompt_tokens_checked": len(checked),
        "prompt_tokens_match": (sum(o.prompt_tokens_reported == o.prompt_tokens for o in checked) / len(checked)
                                if checked else math.nan),
        "client_send_ms": 1e3 * float(np.median([o.send_s for o in ok])) if ok else math.nan,
        "resends": sum(o.resent for o in outcomes),
    }
    if slo_ttft_ms is not None or slo_tpot_ms is not None:
        good = sum((slo_ttft_ms is None or 1e3 * o.ttft_s <= slo_ttft_ms) and
                   (slo_tpot_ms is None or 1e3 * (o.tpot_s if o.output_tokens > 1 else 0.0) <= slo_tpot_ms)
                   for o in ok)
        row |= {"good_requests": good, "request_goodput": good / duration_s}
    return row


def records(outcomes: list[Outcome]) -> list[RequestRecord]:
    """Each outcome on the request's own clock (from its arrival: it was sent ``sent − due`` later, and its chunks
    came that much after their times from the send), with serve's own columns."""
    out = []
    for o in outcomes:
        send = o.sent_s - o.arrival_s
        out.append(RequestRecord(o.index, o.arrival_s, send, [send + t for t in o.chunks_s], o.prompt_tokens,
                                 o.output_tokens, o.error, {"client_ms": 1e3 * o.send_s, "max_tokens": o.max_tokens,
                                                            "prompt_tokens_reported": o.prompt_tokens_reported,
                                                            "resent": o.resent}))
    return out


#: serve's own columns of ``requests.csv``, after the shared ones.
REQUEST_EXTRA = (
    Column("client_ms", "ms", "the client's own time to build and write the request"),
    Column("max_tokens", "", "output tokens asked (max_tokens, with the end of text ignored)"),
    Column("prompt_tokens_reported", "", "prompt tokens as the server's usage report counts them"),
    Column("resent", "", "times the request was sent again on a new connection (its pooled one had been closed)"),
)
