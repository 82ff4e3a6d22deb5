"""llama.cpp under the server, measured on the served file and threads after the load (the server stopped), for the
report's "Reconciling the layers": the engine experiment's in-process tg test, llama-bench's tg, and
llama-batched-bench at batch 1 and at the server's slots, all with the point's output length (batched-bench also
with its prompt length). Each is one layer less than the server: no HTTP, no sampling, no queue."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from experiments.framework.bench import BenchConfig
from experiments.framework.spec import Column
from experiments.shared import batched_bench, llama_bench
from experiments.shared.llamacpp import LlamaCpp, rates, time_test

log = logging.getLogger(__name__)

COLUMNS = (
    Column("reference_engine_tg_tokens_per_s", "tok/s", "the engine experiment's tg test in process (llama-cpp-python) "
                                                        "on the same file and threads, `serve.output_len` tokens"),
    Column("reference_llama_bench_tg_tokens_per_s", "tok/s", "llama-bench's tg test on the same file and threads"),
    Column("reference_tg_b1_tokens_per_s", "tok/s", "llama-batched-bench on the same file and threads, one sequence: "
                                                    "S_TG, generation without HTTP, sampling or queueing"),
    Column("reference_tg_tokens_per_s", "tok/s", "llama-batched-bench at a batch of `serve.parallel` sequences: "
                                                 "S_TG, the generation throughput that many busy slots reach at best"),
    Column("reference_pp_tokens_per_s", "tok/s", "llama-batched-bench at that batch: S_PP, prompt processing"),
)


def measure(path: Path, threads: int, prompt_len: int, output_len: int, parallel: int,
            seed: int) -> dict[str, float]:
    """The reference columns; a layer that cannot be measured is left out, said in one line."""
    out: dict[str, float] = {}
    bench = BenchConfig(warmup=1, repeats=5, min_sample_s=1e-3, max_seconds=300)
    try:
        with LlamaCpp(path, threads, output_len + 8, 512, 512) as engine:
            tokens = np.random.default_rng(seed).integers(3, engine.n_vocab, output_len)
            out["reference_engine_tg_tokens_per_s"] = rates(time_test(engine, tokens, 1, 0, bench),
                                                            output_len)["tokens_per_s"]
        cmd = llama_bench.command(path, threads, 0, output_len, 0, 512, 512, False, "f16", "f16", bench.repeats)
        timing = next(t for t in llama_bench.run(cmd, bench.max_seconds) if t.test == "tg").timing
        out["reference_llama_bench_tg_tokens_per_s"] = rates(timing, output_len)["tokens_per_s"]
        batches = sorted({1, parallel})
        found = batched_bench.run(path, threads, prompt_len, output_len, batches)
        out |= {"reference_tg_b1_tokens_per_s": found[1].tg_tokens_per_s,
                "reference_tg_tokens_per_s": found[parallel].tg_tokens_per_s,
                "reference_pp_tokens_per_s": found[parallel].pp_tokens_per_s}
    except (RuntimeError, OSError, ValueError, StopIteration) as exc:
        log.warning("the reference under the server is incomplete: %s", exc)
    return out
