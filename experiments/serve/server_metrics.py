"""The server's own account of a load level: llama-server's Prometheus ``/metrics`` (``--metrics``), read before
and after the measured requests and sampled while they run.

The counters are cumulative since the server started, so a level's figures are differences of two reads
(``llamacpp:prompt_tokens_total`` after − before, …). ``n_busy_slots_per_decode`` is an average over every
decode since the start; with ``n_decode_total`` beside it, the level's own average is
Δ(average × decodes) / Δdecodes. The gauges of the moment (requests processing, deferred) are sampled every
``interval_s`` while the load runs; their peaks are kept.
"""

from __future__ import annotations

import math
import threading
import urllib.request
from dataclasses import dataclass, field

from experiments.framework.spec import Column
from experiments.serve.request import Outcome

PREFIX = "llamacpp:"

COLUMNS = (
    Column("server_kind", "", "the embedded server: `llama-server` (llama.cpp's own, with slots) or "
                              "`llama-cpp-python` (one request at a time); empty for a server by URL"),
    Column("server_parallel", "", "llama-server's slots (`-np`), each with `n_ctx` tokens of context"),
    Column("server_prompt_tokens", "", "prompt tokens the server processed during the level (its /metrics; cached "
                                       "prefixes are not processed again)"),
    Column("server_predicted_tokens", "", "tokens the server generated during the level (its /metrics)"),
    Column("server_prompt_tokens_per_s", "tok/s", "the server's prompt tokens / the time its slots spent on "
                                                  "prompts (per slot: the slots' times add up)"),
    Column("server_predicted_tokens_per_s", "tok/s", "the server's generated tokens / the time its slots spent "
                                                     "generating (per slot, as the server reports it)"),
    Column("server_output_throughput", "tok/s", "the server's generated tokens / the level's duration (all slots: "
                                                "compare with output_throughput)"),
    Column("server_decode_calls", "", "llama_decode() calls during the level"),
    Column("server_busy_slots_per_decode", "", "busy slots per llama_decode() call during the level: the batch "
                                               "continuous batching achieved"),
    Column("server_max_processing", "", "most requests the server was processing at once (sampled)"),
    Column("server_max_deferred", "", "most requests the server deferred at once, waiting for a slot (sampled)"),
    Column("server_context_high_water", "", "the server's high-water mark of tokens in a context since it started"),
    Column("token_count_disagreements", "", "requests whose streamed token chunks differ from the server's usage "
                                            "count, plus 1 if the server's generated total differs from the "
                                            "client's (both counted over the measured requests)"),
)


def parse(text: str) -> dict[str, float]:
    """``llamacpp:*`` samples of a Prometheus text exposition, by name (labels dropped)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(PREFIX):
            name, _, value = line.partition(" ")
            try:
                values[name.split("{")[0].removeprefix(PREFIX)] = float(value.split()[0])
            except (ValueError, IndexError):
                continue
    return values


def read(base_url: str, timeout_s: float = 5.0) -> dict[str, float]:
    """The server's metrics now; empty when it has none (``--metrics`` off, or not llama-server)."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/metrics", timeout=timeout_s) as resp:
            return parse(resp.read().decode(errors="replace"))
    except OSError:
        return {}


@dataclass
class Sampler:
    """Reads ``/metrics`` every ``interval_s`` in a thread while a load runs; keeps the peaks of the gauges."""

    base_url: str
    interval_s: float = 0.25
    peaks: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics-sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            now = read(self.base_url, timeout_s=self.interval_s * 4)
            for name in ("requests_processing", "requests_deferred"):
                if name in now:
                    self.peaks[name] = max(self.peaks.get(name, 0.0), now[name])

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def level_figures(before: dict[str, float], after: dict[str, float], duration_s: float,
                  peaks: dict[str, float]) -> dict[str, float]:
    """The server-side columns of one level from its two reads (empty when the server gave no metrics)."""
    if not before or not after:
        return {}

    def delta(name: str) -> float:
        return after.get(name, math.nan) - before.get(name, math.nan)

    prompt, predicted = delta("prompt_tokens_total"), delta("tokens_predicted_total")
    decodes = delta("n_decode_total")
    busy = (after.get("n_busy_slots_per_decode", math.nan) * after.get("n_decode_total", math.nan)
            - before.get("n_busy_slots_per_decode", math.nan) * before.get("n_decode_total", math.nan))
    prompt_s, predicted_s = delta("prompt_seconds_total"), delta("tokens_predicted_seconds_total")
    return {"server_prompt_tokens": prompt, "server_predicted_tokens": predicted,
            "server_prompt_tokens_per_s": prompt / prompt_s if prompt_s > 0 else math.nan,
            "server_predicted_tokens_per_s": predicted / predicted_s if predicted_s > 0 else math.nan,
            "server_output_throughput": predicted / duration_s if duration_s > 0 else math.nan,
            "server_decode_calls": decodes,
            "server_busy_slots_per_decode": busy / decodes if decodes > 0 else math.nan,
            "server_max_processing": peaks.get("requests_processing", math.nan),
            "server_max_deferred": peaks.get("requests_deferred", math.nan),
            "server_context_high_water": after.get("n_tokens_max", math.nan)}


def token_disagreements(outcomes: list[Outcome], server_predicted: float | None) -> int:
    """Requests whose token chunks differ from the server's usage count, plus one when the server's total of
    generated tokens differs from the sum of the usage counts (None: the server gave no total)."""
    n = sum(o.usage_tokens is not None and o.usage_tokens != o.token_chunks for o in outcomes)
    if server_predicted is not None and not math.isnan(server_predicted):
        n += int(server_predicted != sum(o.output_tokens for o in outcomes))
    return n
