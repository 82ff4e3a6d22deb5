"""Is the serve experiment's client ever the bottleneck? Its capacity against a zero-delay server.

    python benchmarks/bench_serve_client.py [--requests 3000] [--rounds 3]

The scripted server (``python -m experiments.serve.scripted``, a separate process on loopback, both on
this machine's cores) answers every request at once with 16 streamed tokens, one SSE event each. The
client runs its real load loop (the same code as ``experiment=serve``) at concurrency 32 and 64 and
records every token's arrival; the figure is completed requests per second, each round checked to
have recorded all 16 arrivals of every request. Target: >= 1,000 requests/s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.table import Figure, Table
from experiments.serve.client import run_load
from experiments.serve.request import Endpoint, Request
from experiments.serve.scripted import spawn
from experiments.serve.streams import Api

TOKENS = 16


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    table = Table("Serve client capacity: streamed requests per second against a zero-delay scripted server")
    rates: dict[int, list[float]] = {32: [], 64: []}
    complete = True
    with spawn() as (url, _):
        ep = Endpoint(url, Api.openai_completions, "scripted")
        for _ in range(args.rounds):
            for concurrency in rates:  # interleaved: both concurrencies see the same machine state
                reqs = [Request(i, "a b c", 3, TOKENS) for i in range(args.requests)]
                outs, duration, _ = run_load(ep, reqs, concurrency, [Request(-1, "a", 1, TOKENS)] * concurrency)
                complete &= all(o.ok and len(o.chunks_s) == TOKENS and o.output_tokens == TOKENS for o in outs)
                rates[concurrency].append(len(outs) / duration)
    for concurrency, values in rates.items():
        table.add(Figure(f"requests/s of {TOKENS} streamed tokens, concurrency {concurrency}", values, " req/s",
                         (">=", 1000), holds=complete,
                         note=f"{args.requests} requests per round, every token's arrival recorded: "
                              f"{'yes' if complete else 'NO'}"))
    return table.finish()


if __name__ == "__main__":
    sys.exit(main())
