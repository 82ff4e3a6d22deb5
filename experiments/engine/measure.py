"""Run the engine experiment: one model file in one engine, llama-bench's pp and tg tests, their place
on the machine's roofline, and the fidelity of the engine's logits.

A point makes (or finds in ``engine.models_dir``) the model file, loads it into the engine, fills
the KV cache with ``depth`` tokens, and times the prompt test (``n_prompt`` tokens in ``n_batch``
chunks) and the generation test (``n_gen`` tokens, one per call), each call restarting from
``depth``. Then it compares the engine's logits on ``n_check`` tokens with the NumPy reference on the
same file and with the f32 model of the same shape and seed. One row per test; the fidelity columns
repeat on both rows.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from experiments.engine.fidelity import compare
from experiments.engine.numpy_engine import NumpyEngine
from experiments.engine.schema import KEY, Backend, EngineConfig
from experiments.framework.bench import BenchConfig, check_fits, run_variant, timing_columns
from experiments.framework.progress import machine_reference
from experiments.framework.spec import Column, ConfigError, VariantResult
from experiments.shared import llama_bench
from experiments.shared.llamacpp import CACHE_TYPE_BYTES, LlamaCpp, rates, time_test
from experiments.shared.model import model_file, read_model
from infer_core.measure.timing import Timing
from infer_core.model import ModelShape, load_gguf
from infer_core.model.counts import kv_bytes_per_token, prompt_flops, weight_bytes_per_token
from infer_core.model.gguf_io import StoredTensor, bits_per_weight

log = logging.getLogger(__name__)

COLUMNS = (
    Column("test", "", "`pp`: a prompt of `n_prompt` tokens in one go; `tg`: `n_gen` tokens one at a time"),
    Column("n_tokens", "", "tokens the test processes"),
    Column("tokens_per_s", "tok/s", "median over the samples of n_tokens / time"),
    Column("tokens_per_s_std", "tok/s", "standard deviation of tokens/s over the samples (llama-bench's ±)"),
    Column("tokens_per_s_q1", "tok/s", "first quartile of tokens/s"),
    Column("tokens_per_s_q3", "tok/s", "third quartile of tokens/s"),
    *timing_columns("time_median_s", "time_min_s", "time_max_s", "time_cv", "n_samples", "warmup", "unstable"),
    Column("n_threads", "", "threads the engine ran on"),
    Column("n_params", "", "weights in the model (norms and biases included)"),
    Column("file_bytes", "B", "size of the model file"),
    Column("bits_per_weight", "bit", "8 × tensor bytes / weights"),
    Column("load_s", "s", "time to load the file into the engine (numpy: read and dequantize to float32)"),
    Column("model_reused", "", "True when the model file was found in `engine.models_dir`, False when written"),
    Column("engine_version", "", "llama-cpp-python's version (llamacpp), llama-bench's build (llama-bench: its "
                                 "logits are checked through llama-cpp-python, the same llama.cpp), NumPy's (numpy)"),
    Column("weight_bytes_per_token", "B", "tg: weight bytes read per token: every matrix once, one embedding row "
                                          "(numpy: as float32)"),
    Column("kv_bytes_per_token", "B", "tg: KV cache bytes read per token at the test's mean context "
                                      "(depth + (n_gen + 1) / 2)"),
    Column("gb_per_s", "GB/s", "tg: (weight + KV bytes per token) × tokens/s"),
    Column("bandwidth_gbps", "GB/s", "the machine's measured read bandwidth at this thread count"),
    Column("pct_of_bandwidth", "%", "tg: gb_per_s / bandwidth_gbps, the share of the memory roofline"),
    Column("flops", "FLOP", "pp: 2 × matrix weights × n_prompt (the output matrix once: only the last token's "
                            "logits) + causal attention, 4 × d_head × heads × keys seen, per layer"),
    Column("gflops", "GFLOP/s", "pp: flops / median time"),
    Column("peak_gflops", "GFLOP/s", "the machine's measured float32 GEMM peak at this thread count"),
    Column("pct_of_peak", "%", "pp: gflops / peak_gflops", kind="measurement"),
    Column("check_tokens", "", "tokens whose logits were compared (`engine.n_check`)"),
    Column("max_abs_diff_vs_ref", "", "max |engine logit − reference logit|; the reference is the NumPy forward "
                                      "on the file's dequantized weights (0 for backend=numpy: it is the reference)"),
    Column("max_rel_diff_vs_ref", "", "max_abs_diff_vs_ref / max |reference logit|"),
    Column("top1_agree_vs_ref", "", "share of tokens whose most likely next token is the reference's"),
    Column("mean_kld_vs_f32", "nat", "mean KL(p_f32 ‖ p_engine) of the next-token distributions, against the f32 "
                                     "model of the same shape and seed (llama.cpp's --kl-divergence)"),
    Column("median_kld_vs_f32", "nat", "median of the per-token KL divergence"),
    Column("p99_kld_vs_f32", "nat", "99th percentile of the per-token KL divergence"),
    Column("max_kld_vs_f32", "nat", "largest per-token KL divergence"),
    Column("same_top_vs_f32", "", "share of tokens where the engine and the f32 model agree on the top token"),
    Column("f32_mean_entropy", "nat", "mean entropy of the f32 model's next-token distributions"),
    Column("log_vocab", "nat", "log(n_vocab): the entropy of a flat distribution"),
)
NAMES = {c.name for c in COLUMNS}


def engine_version(backend: Backend) -> str:
    if backend is Backend.llama_bench:
        return "llama-bench"  # its build is added from its own output
    if backend is Backend.numpy:
        return np.__version__
    import llama_cpp

    return llama_cpp.__version__


def open_engine(cfg: EngineConfig, path: Path, n_ctx: int) -> LlamaCpp | NumpyEngine:
    try:
        if cfg.backend is Backend.numpy:
            return NumpyEngine(path, cfg.n_threads)
        return LlamaCpp(path, cfg.n_threads, n_ctx, cfg.n_batch, cfg.n_ubatch, cfg.flash_attn, cfg.type_k.value,
                        cfg.type_v.value, logits_all=True)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def run(cfg: EngineConfig, bench: BenchConfig, seed: int) -> list[VariantResult]:
    """Time the pp and tg tests of one model in one engine; check its logits."""
    path, reused = model_file(cfg, seed)
    shape, stored = read_model(path, KEY)
    need = cfg.depth + cfg.n_prompt + cfg.n_gen
    if need > shape.context or cfg.n_check > shape.context:
        raise ConfigError(f"{KEY}.depth + {KEY}.n_prompt + {KEY}.n_gen = {need} (or {KEY}.n_check={cfg.n_check}) "
                          f"exceeds the context of {path} ({shape.context} tokens)")
    numpy = cfg.backend is Backend.numpy
    check_fits(KEY, {"weights": sum(4 * t.n_weights if numpy else t.nbytes for t in stored),
                     "float32 reference": 4 * shape.n_params}, f"choose a smaller {KEY}.model")
    rng = np.random.default_rng(seed)
    check = rng.integers(3, shape.n_vocab, cfg.n_check)  # ids 0-2 are control tokens
    depth, prompt, gen = (rng.integers(3, shape.n_vocab, n) for n in (cfg.depth, cfg.n_prompt, cfg.n_gen))
    with threadpool_limits(cfg.n_threads, user_api="blas"):
        machine, measured = machine_reference(bench.machine_file)
    if measured:
        log.info("measured the machine reference at %d threads (cached in %s)", cfg.n_threads, bench.machine_file)

    common = {"n_threads": cfg.n_threads, "engine_version": engine_version(cfg.backend),
              "n_params": sum(t.n_weights for t in stored), "file_bytes": path.stat().st_size,
              "bits_per_weight": bits_per_weight(stored), "model_reused": reused,
              "bandwidth_gbps": machine.read_gbps, "peak_gflops": machine.peak_gflops("float32")}
    results = []
    measured_by = None
    if cfg.backend is Backend.llama_bench:
        measured_by = llama_bench.timings(llama_bench.command(
            path, cfg.n_threads, cfg.n_prompt, cfg.n_gen, cfg.depth, cfg.n_batch, cfg.n_ubatch, cfg.flash_attn,
            cfg.type_k.value, cfg.type_v.value, bench.repeats), bench.max_seconds, common)
    with open_engine(cfg, path, max(need, cfg.n_check)) as engine:
        common["load_s"] = engine.load_s
        engine.keep(0)
        if cfg.depth:
            engine.run(engine.batches(depth, cfg.n_batch))
        tests = [("pp", prompt, cfg.n_batch), ("tg", gen, 1)]
        for test, tokens, size in tests:
            if len(tokens):
                results.append(run_variant(label(test, len(tokens), cfg.depth), lambda t=test, x=tokens, s=size: _time(
                    engine, t, x, s, cfg, shape, stored, common, bench, measured_by), bench))
        engine_logits = engine.logits(check)
        ref_logits = engine_logits if numpy else None
    if ref_logits is None:
        with threadpool_limits(cfg.n_threads, user_api="blas"):
            ref_logits = load_gguf(path, threads=cfg.n_threads).logits(check)
    fidelity = compare(cfg, seed, check, engine_logits, ref_logits)
    for r in results:
        r.metrics.update(fidelity)
    return results


def _time(engine: LlamaCpp | NumpyEngine, test: str, tokens: np.ndarray, size: int, cfg: EngineConfig,
          shape: ModelShape, stored: list[StoredTensor], common: dict, bench: BenchConfig,
          measured_by: dict[str, Timing | str] | None = None) -> VariantResult:
    if measured_by is None:
        timing = time_test(engine, tokens, size, cfg.depth, bench)
    elif isinstance(found := measured_by.get(test, f"llama-bench gave no {test} test"), str):
        raise RuntimeError(found)
    else:
        timing = found
    n = len(tokens)
    stats = timing.stats()
    metrics = {"test": test, "n_tokens": n, **rates(timing, n), **{k: v for k, v in stats.items() if k in NAMES},
               **common}
    if test == "tg":
        numpy = cfg.backend is Backend.numpy  # float32 weights and cache
        kv_k, kv_v = (4.0, 4.0) if numpy else (CACHE_TYPE_BYTES[cfg.type_k.value], CACHE_TYPE_BYTES[cfg.type_v.value])
        kv = kv_bytes_per_token(shape, cfg.depth, n, kv_k, kv_v)
        weights = weight_bytes_per_token(shape, stored, 4 if numpy else None)
        gbps = (weights + kv) * metrics["tokens_per_s"] / 1e9
        metrics |= {"weight_bytes_per_token": weights, "kv_bytes_per_token": kv, "gb_per_s": gbps,
                    "pct_of_bandwidth": 100 * gbps / common["bandwidth_gbps"]}
    else:
        flops = prompt_flops(shape, n, cfg.depth)
        gflops = flops / timing.median / 1e9
        metrics |= {"flops": flops, "gflops": gflops, "pct_of_peak": 100 * gflops / common["peak_gflops"]}
    return VariantResult(label(test, n, cfg.depth), metrics, timings={test: timing})


def label(test: str, n_tokens: int, depth: int) -> str:
    """llama-bench's name of a test: ``pp512``, ``tg128``, ``tg128 @ d4096`` after a filled cache."""
    return f"{test}{n_tokens}" + (f" @ d{depth}" if depth else "")


def summary(results: list[VariantResult]) -> str:
    parts = [f"{r.variant} {r.metrics['tokens_per_s']:.1f} ± {r.metrics['tokens_per_s_std']:.1f} t/s"
             for r in results if r.status == "ok"]
    ok = [r for r in results if r.status == "ok"]
    if ok and "mean_kld_vs_f32" in ok[0].metrics:
        m = ok[0].metrics
        parts.append(f"KLD vs f32 {m['mean_kld_vs_f32']:.4f}, same top {100 * m['same_top_vs_f32']:.1f}%")
    return "; ".join(parts) or "no test completed"
