"""The serve experiment's client: stream parsing, the metrics' definitions, the workload, and timing
measured against a scripted server whose delays are programmed (a real process on loopback)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from experiments.serve.client import run_load
from experiments.serve.metrics import max_in_flight, summarize
from experiments.serve.request import Endpoint, Outcome, Request
from experiments.serve.scripted import spawn
from experiments.serve.streams import Api, MalformedStream, parser_for
from experiments.serve.workload import Prompts, prompt
from infer_core.serving.traces import Lengths, arrivals, draw_lengths


def sse(*objs: object) -> bytes:
    return b"".join(b"data: " + (o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\r\n\r\n" for o in objs)


def text(t: str, finish: str | None = None) -> dict:
    return {"choices": [{"index": 0, "text": t, "finish_reason": finish}]}


def feed_all(api: Api, data: bytes, cut: int) -> tuple[list[int], object]:
    """Feed ``data`` in pieces of ``cut`` bytes; the token chunks each piece completed."""
    parser = parser_for(api)
    counts = [parser.feed(data[i:i + cut]) for i in range(0, len(data), cut)]
    parser.close()
    return counts, parser


@pytest.mark.parametrize("cut", [1, 7, 10_000])
def test_sse_however_cut_counts_token_chunks_and_takes_counts_from_usage(cut):
    data = (b": ping\r\n\r\n" + sse(text("a b"), text(""), text("c d e")) + b": keep-alive\n\n"
            + sse(text("", "length"), {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 6}})
            + b"data: [DONE]\n\n")
    counts, parser = feed_all(Api.openai_completions, data, cut)
    # three token chunks (an empty text without a finish reason is a token: a byte piece); the closing
    # chunk is not one; the count of tokens is the server's (6), not the chunks' (3)
    assert sum(counts) == 3 and parser.chunks == 3
    assert parser.output_tokens == 6 and parser.prompt_tokens == 9
    if cut == 10_000:
        assert counts == [3]  # several events in one read are stamped together


def test_chat_role_chunk_is_not_a_token_and_chunks_count_without_usage():
    role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    tokens = [{"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in ("x", "y")]
    end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    _, parser = feed_all(Api.openai_chat, sse(role, *tokens, end, b"[DONE]"), 10_000)
    assert parser.chunks == 2 and parser.output_tokens == 2 and parser.prompt_tokens is None


def test_ollama_lines_count_tokens_and_read_the_done_line():
    lines = b"".join(json.dumps(o).encode() + b"\n" for o in (
        {"response": "a", "done": False}, {"response": "b", "done": False},
        {"response": "", "done": True, "eval_count": 2, "prompt_eval_count": 5, "context": list(range(5000))}))
    counts, parser = feed_all(Api.ollama_generate, lines, 13)
    assert sum(counts) == 2 and parser.output_tokens == 2 and parser.prompt_tokens == 5


@pytest.mark.parametrize(("api", "data", "message"), [
    (Api.openai_completions, sse(text("a")) + b'data: {"choices": [\n\n', "malformed chunk"),
    (Api.openai_completions, sse(text("a")) + b"garbage line\n", "not an SSE field"),
    (Api.openai_completions, sse(text("a")), "ended before it was done"),
    (Api.openai_completions, sse({"error": {"message": "overloaded"}}), "reported an error: {'message': 'overloaded'}"),
    (Api.ollama_generate, b'{"response": "a", "done": false}\n[1, 2]\n', "is not a JSON object"),
])
def test_malformed_or_cut_streams_raise_one_clear_line(api, data, message):
    parser = parser_for(api)
    with pytest.raises(MalformedStream, match=message.replace("[", r"\[").replace("{", r"\{")):
        parser.feed(data)
        parser.close()


def outcome(index: int, chunks: list[float], tokens: int, **kw) -> Outcome:
    return Outcome(index, max_tokens=tokens, prompt_tokens=10, sent_s=0.1 * index, send_s=0.0, chunks_s=chunks,
                   output_tokens=tokens, **kw)


def test_metrics_follow_vllm_definitions_exactly():
    a = outcome(0, [0.1, 0.2, 0.4], 3)  # TTFT 100 ms, ITL 100 and 200 ms, TPOT (0.4 - 0.1) / 2 = 150 ms
    b = outcome(1, [0.3, 0.35], 5)  # 5 tokens in 2 chunks: TPOT (0.35 - 0.3) / 4 = 12.5 ms
    c = outcome(2, [0.05], 1)  # one token: no TPOT, counts TPOT 0 for goodput
    bad = outcome(3, [], 0, error="HTTP 500: boom")
    row = summarize([a, b, c, bad], duration_s=2.0, requested_rate=math.inf, slo_ttft_ms=150, slo_tpot_ms=160)
    assert row["completed"] == 3 and row["failed"] == 1
    assert row["total_output_tokens"] == 9 and row["total_input_tokens"] == 30
    assert row["request_throughput"] == 1.5 and row["output_throughput"] == 4.5
    assert row["total_token_throughput"] == 19.5
    assert row["mean_ttft_ms"] == pytest.approx(150.0) and row["median_ttft_ms"] == pytest.approx(100.0)
    assert row["mean_tpot_ms"] == pytest.approx(81.25) and row["median_tpot_ms"] == pytest.approx(81.25)
    assert row["median_itl_ms"] == pytest.approx(100.0)  # gaps 100, 200, 50 ms
    assert row["p99_e2el_ms"] == pytest.approx(np.percentile([400, 350, 50], 99))
    assert row["good_requests"] == 2 and row["request_goodput"] == 1.0  # b misses the TTFT SLO (300 ms)
    tight = summarize([a, b, c], 2.0, math.inf, slo_ttft_ms=150, slo_tpot_ms=100)
    assert tight["good_requests"] == 1  # and a the TPOT SLO (150 ms)
    assert row["short_outputs"] == 0 and row["achieved_rate"] == pytest.approx(3 / 0.3)


def test_lengths_and_arrivals_are_seeded_and_match_their_definitions():
    rng = np.random.default_rng(0)
    assert (draw_lengths(rng, 64, Lengths.fixed, 0.5, 5) == 64).all()
    uni = draw_lengths(rng, 100, Lengths.uniform, 0.25, 4000)
    assert uni.min() == 75 and uni.max() == 125
    logn = draw_lengths(rng, 200, Lengths.lognormal, 0.5, 20000)
    assert abs(logn.mean() / 200 - 1) < 0.02  # the mean is kept; sigma 0.5 gives a long tail
    due = arrivals(np.random.default_rng(1), 500, 4.0, 1.0)
    assert due[-1] == pytest.approx(500 / 4.0) and (np.diff(due) >= 0).all()
    gaps = np.diff(due)
    assert abs(gaps.std() / gaps.mean() - 1) < 0.15  # Poisson: exponential gaps, CV 1
    regular = np.diff(arrivals(np.random.default_rng(1), 500, 4.0, 100.0))
    assert regular.std() / regular.mean() < 0.15  # burstiness 100: nearly even gaps
    assert (arrivals(rng, 3, math.inf, 1.0) == 0).all() and (arrivals(rng, 3, None, 1.0) == 0).all()
    assert np.array_equal(draw_lengths(np.random.default_rng(7), 50, Lengths.uniform, 0.5, 9),
                          draw_lengths(np.random.default_rng(7), 50, Lengths.uniform, 0.5, 9))


def test_prompts_have_the_token_count_a_tokenizer_gives():
    # a tokenizer where a space costs 3 tokens (as our byte vocabulary's "▁" does) and each letter one
    def count(t: str) -> int:
        return 1 + sum(3 if ch == " " else 1 for ch in t)

    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 64, 301):
        body, known = prompt(rng, n, count)
        assert known == count(body) == max(n, 2)  # one token (BOS alone) cannot hold a letter
    body, known = prompt(rng, 12, None)
    assert known is None and len(body.split()) == 12


def test_a_real_texts_prompts_are_stretches_of_it_with_their_exact_count():
    """Real text cut by the model's tokenizer (here: a word is a token, and "ab" followed by "c" counts as one more
    when joined back, so a cut and recount must trim): each prompt is a stretch of the text, counted exactly, at
    most the tokens asked for, from seeded offsets that differ."""
    text = ("the quick brown fox jumps over the lazy dog " * 40).split()
    tokens = np.arange(len(text))

    def count(t: str) -> int:
        return len(t.split()) + t.count("lazy dog")  # the joined text counts one more per "lazy dog"

    prompts = Prompts(count, tokens, lambda ids: " ".join(text[i] for i in ids))
    rng = np.random.default_rng(5)
    seen = set()
    for n in (1, 9, 30):
        body, known = prompts(rng, n)
        assert known == count(body) <= n and known >= n - 2 and body in " ".join(text)
        seen.add(body)
    assert len(seen) == 3 and Prompts()(rng, 4)[1] is None  # no tokenizer: random words, count unknown


def test_the_streamed_text_is_kept_as_generated():
    for api, chunks, want in [
        (Api.openai_completions, [{"choices": [{"text": "Hel"}]}, {"choices": [{"text": "lo"}]}], "Hello"),
        (Api.openai_chat, [{"choices": [{"delta": {"role": "assistant"}}]}, {"choices": [{"delta": {"content": "Hi"}}]},
                           {"choices": [{"delta": {"content": "!"}}]}], "Hi!")]:
        parser = parser_for(api)
        parser.feed(b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n")
        assert "".join(parser.texts) == want


def programmed(out: Outcome, ttft_ms: float, itl_ms: float, k: int) -> tuple[float, list[float], float]:
    """What the script promises: TTFT, the chunk gaps, E2EL (ms)."""
    n_chunks = math.ceil(out.max_tokens / k)
    return ttft_ms, [k * itl_ms] * (n_chunks - 1), ttft_ms + (n_chunks - 1) * k * itl_ms


@pytest.mark.parametrize(("concurrency", "k", "n_requests"), [(1, 1, 100), (1, 4, 100), (16, 1, 480), (16, 4, 480)])
def test_measured_latencies_agree_with_the_programmed_ones(concurrency, k, n_requests):
    """TTFT, ITL and E2EL within 3 ms at the median of what the server was told to do (a wrong definition is off by
    at least one 5 ms gap), and no more than a fifth of them off by more than 10 ms: bounds a busy machine does not
    break (with both cores busy and memory-heavy work beside it, medians came 1.7-2.5 ms late and 4-10% of TTFTs
    more than 5 ms), as it broke a p99 of 100.

    At concurrency 16 the requests arrive at Poisson times at the rate that keeps about 16 in flight, capped
    at 16: a closed loop would start 16 at the same instant, and on these 2 cores the client then stamps the
    last of 16 simultaneous first chunks 2-4 ms late (its own queue, not the server's)."""
    ttft_ms, itl_ms = 20.0, 5.0
    rng = np.random.default_rng(0)
    lengths = rng.integers(8, 17 if concurrency == 1 else 49, n_requests)
    due = np.zeros(n_requests)
    if concurrency > 1:
        due = arrivals(rng, n_requests, concurrency / ((ttft_ms + (lengths.mean() - 1) * itl_ms) / 1e3), 1.0)
    reqs = [Request(i, "a b c", 3, int(n), float(t)) for i, (n, t) in enumerate(zip(lengths, due, strict=True))]
    warm = [Request(-1, "a", 1, 4)] * concurrency
    with spawn("--ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms), "--tokens-per-chunk", str(k), "--ping") as (url, _):
        outs, duration, _ = run_load(Endpoint(url, Api.openai_completions, "scripted"), reqs, concurrency, warm)
    in_flight = sum(o.send_s + o.e2el_s for o in outs) / duration
    assert max_in_flight(outs) == concurrency and in_flight > 0.8 * concurrency
    assert all(o.ok for o in outs), [o.error for o in outs if o.error][:3]
    assert [o.output_tokens for o in outs] == list(lengths)  # the usage report's count
    assert [len(o.chunks_s) for o in outs] == [math.ceil(n / k) for n in lengths]
    err = {"ttft": [], "itl": [], "e2el": []}
    for o in outs:
        ttft, gaps, e2el = programmed(o, ttft_ms, itl_ms, k)
        err["ttft"].append(1e3 * o.ttft_s - ttft)
        err["itl"] += [1e3 * g - p for g, p in zip(o.itl_s, gaps, strict=True)]
        err["e2el"].append(1e3 * o.e2el_s - e2el)
    for name, values in err.items():
        off = np.abs(values)
        assert np.percentile(off, 50) <= 3.0 and np.mean(off > 10.0) <= 0.2, \
            f"{name}: p50 {np.percentile(off, 50):.2f} ms off, {100 * np.mean(off > 10.0):.1f}% off by more than 10 ms"


@pytest.mark.parametrize("api", [Api.openai_chat, Api.ollama_generate])
def test_every_api_streams_and_counts(api):
    reqs = [Request(i, "x y", 2, 6 + i) for i in range(8)]
    with spawn("--tokens-per-chunk", "2") as (url, _):
        outs, _, _ = run_load(Endpoint(url, api, "scripted"), reqs, 4)
    assert [o.error for o in outs] == [""] * 8
    assert [o.output_tokens for o in outs] == [6 + i for i in range(8)]
    assert [o.prompt_tokens_reported for o in outs] == [2] * 8


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_server_that_closes_the_connection_after_each_answer_loses_no_request(concurrency, monkeypatch):
    """llama-server closes the connection after every streamed answer while its headers promise keep-alive: the
    client put the connection back in its pool and the next request on it failed at once (6 to 10 of every 24).
    The scripted server does the same; every request must be answered, and a request that found its pooled
    connection closed is sent again on a new one, counted in ``resent``. With resending off (limit 0) the same
    load loses requests: the test sees the fault it guards against. (At concurrency 16 the client mostly sees the
    close before it reuses the connection; llama-server itself is loaded at 1, 4 and 16 in test_llama_tools.py.)"""
    import experiments.serve.client as client

    reqs = [Request(i, "a b c", 3, 4) for i in range(200)]
    warm = [Request(-1, "a", 1, 2)] * concurrency
    with spawn("--fault", "close", "--itl-ms", "0.2") as (url, _):
        outs, _, _ = run_load(Endpoint(url, Api.openai_completions, "scripted"), reqs, concurrency, warm)
        assert [o.error for o in outs if o.error] == []
        assert [o.output_tokens for o in outs] == [4] * 200
        assert sum(o.resent for o in outs) > 0
        monkeypatch.setattr(client, "RESEND_LIMIT", 0)
        lost, _, _ = run_load(Endpoint(url, Api.openai_completions, "scripted"), reqs, concurrency, warm)
    failed = [o.error for o in lost if o.error]
    assert failed and all(e.startswith(("the server closed the connection before the answer ended (0 chunks",
                                        "ClientOSError")) for e in failed), failed[:3]
