"""Run the KV memory study: one seeded trace, served under each allocation policy (and block size), its memory
use time-averaged over the trace; with ``mem.samples``, the memory parallel samples save by sharing blocks.

Nothing here is timed: every figure is a count, the same on every machine for the same knobs and seed.
"""

from __future__ import annotations

from experiments.framework.bench import BenchConfig
from experiments.framework.spec import Column, VariantResult
from experiments.kv_memory.schema import MemConfig
from infer_core.serving.kv_memory import Allocation, MemoryUse, sharing, simulate
from infer_core.serving.traces import make_trace

COLUMNS = (
    Column("block_size", "tokens", "paged: tokens per block (empty for a contiguous policy)"),
    Column("utilization_pct", "%", "slots holding tokens / slots reserved, both summed over the steps"),
    Column("reservation_pct", "%", "of the reserved slots: held for tokens the request will produce later"),
    Column("internal_frag_pct", "%", "of the reserved slots: never filled (past the final length, or a block's "
                                     "unused tail)"),
    Column("external_frag_pct", "%", "of the budget: free while the next request could not be placed"),
    Column("budget_used_pct", "%", "of the budget: slots holding tokens"),
    Column("max_seqs", "", "the most sequences resident at once"),
    Column("mean_seqs", "", "sequences resident, averaged over the steps"),
    Column("steps", "", "decode steps to serve the whole trace (one token per resident request per step)"),
    Column("preemptions", "", "paged: requests freed to make room, prefilled again later"),
    Column("budget_tokens", "tokens", "token slots in `mem.budget_gib` for `mem.model`"),
    Column("bytes_per_token", "B", "K and V of every layer and KV head for one token"),
    Column("trace_mean_prompt", "tokens", "mean prompt length of the trace (after the cut to `mem.max_len`)"),
    Column("trace_mean_output", "tokens", "mean output length of the trace"),
    Column("samples", "", "sharing rows: parallel samples per request"),
    Column("shared_blocks", "", "sharing rows: blocks held by n samples sharing the prompt, summed over the steps"),
    Column("unshared_blocks", "", "sharing rows: blocks held by n samples each with its own copy, summed likewise"),
    Column("sharing_saved_pct", "%", "sharing rows: 1 − shared / unshared"),
)


def _row(use: MemoryUse) -> dict[str, float]:
    return {"utilization_pct": 100 * use.utilization,
            "reservation_pct": 100 * use.reservation_slots / use.reserved_slots,
            "internal_frag_pct": 100 * use.internal_slots / use.reserved_slots,
            "external_frag_pct": 100 * use.external_slots / use.budget_slots,
            "budget_used_pct": 100 * use.token_slots / use.budget_slots, "max_seqs": use.max_seqs,
            "mean_seqs": use.mean_seqs, "steps": use.steps, "preemptions": use.preemptions}


def run(cfg: MemConfig, bench: BenchConfig, seed: int) -> list[VariantResult]:
    """Every policy of ``cfg.policies`` (paged once per block size), then the sharing rows."""
    trace = make_trace(seed, cfg.n_requests, *cfg.means, cfg.lengths, cfg.spread, cfg.max_len)
    common = {"budget_tokens": cfg.budget_tokens, "bytes_per_token": cfg.bytes_per_token,
              "trace_mean_prompt": float(trace.prompt.mean()), "trace_mean_output": float(trace.output.mean())}
    rows = []
    for policy in cfg.policies:
        for bs in cfg.block_sizes if policy is Allocation.paged else [None]:
            use = simulate(trace.prompt, trace.output, policy, cfg.budget_tokens, cfg.max_len, bs or 1)
            name = f"paged/{bs}" if bs else policy.value
            rows.append(VariantResult(name, {"block_size": bs, **_row(use), **common}))
    k = min(cfg.sharing_requests, cfg.n_requests)
    for n in cfg.samples:
        shared, unshared = sharing(trace.prompt[:k], trace.output[:k], n, cfg.sharing_block_size)
        rows.append(VariantResult(f"sharing n={n}", {
            "block_size": cfg.sharing_block_size, "samples": n, "shared_blocks": shared, "unshared_blocks": unshared,
            "sharing_saved_pct": 100 * (1 - shared / unshared), **common}))
    return rows


def summary(results: list[VariantResult]) -> str:
    parts = []
    for r in results:
        m = r.metrics
        if "utilization_pct" in m:
            parts.append(f"{r.variant} {m['utilization_pct']:.1f}%")
        elif "sharing_saved_pct" in m:
            parts.append(f"{r.variant} saves {m['sharing_saved_pct']:.1f}%")
    return "utilization: " + ", ".join(parts)
