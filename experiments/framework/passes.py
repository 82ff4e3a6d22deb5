"""A point measured in passes (``sweep.rounds=R``): the samples of its earlier passes carried into the next.

The sweep runs pass 1 of every point, then pass 2 of every point, and so on, so that a point's passes are minutes
apart and meet different stretches of the machine's drift. Each pass runs the experiment again; every timed call
(``BenchConfig.measure``, ``measure_rounds``) returns its samples merged with those the same call took in the earlier
passes, so the last pass's rows are computed from every pass's samples, and the experiment knows nothing of passes.
A call is recognised by its place in the run (the k-th timed call), which the same config repeats; a pass that times
other calls than the first is refused. Between passes a point keeps ``passes.json``: each pass's new samples, its
canary reading and the config it measured, written atomically, so a resumed sweep continues at the next pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infer_core.measure.canary import CanaryReading
from infer_core.measure.files import write_text_atomic
from infer_core.measure.timing import Timing

PASSES = "passes.json"


@dataclass
class Carry:
    """One pass of a point: the earlier passes' samples by call, and what this pass's calls returned."""

    prior: dict[str, Timing] = field(default_factory=dict)
    new: dict[str, Timing] = field(default_factory=dict)  # this pass's own samples
    merged: dict[str, Timing] = field(default_factory=dict)  # what each call returned (prior + new)
    calls: int = 0

    def take(self, timing: Timing, name: str | None = None) -> Timing:
        """Record a call's new samples; return them after the earlier passes' (a call of ``measure_rounds``
        passes each function's ``name``)."""
        key = f"{self.calls}" if name is None else f"{self.calls}/{name}"
        self.new[key] = timing
        self.merged[key] = self.prior[key].merged(timing) if key in self.prior else timing
        return self.merged[key]


_CARRY: ContextVar[Carry | None] = ContextVar("infer_sweep_carry", default=None)


def carried(timing: Timing) -> Timing:
    """``timing`` merged with the earlier passes of the same call (unchanged outside a pass)."""
    carry = _CARRY.get()
    if carry is None:
        return timing
    merged = carry.take(timing)
    carry.calls += 1
    return merged


def carried_rounds(timings: dict[str, Timing]) -> dict[str, Timing]:
    """:func:`carried` for the functions one ``measure_rounds`` call timed together."""
    carry = _CARRY.get()
    if carry is None:
        return timings
    merged = {name: carry.take(t, name) for name, t in timings.items()}
    carry.calls += 1
    return merged


def run_pass(fn: Callable[..., Any], carry: Carry, *args: Any) -> tuple[Any, Carry]:
    """``fn(*args)`` with ``carry`` active; returns its value and the carry (one object: sent back together from a
    child process, the merged timings in the results are still the carry's own)."""
    token = _CARRY.set(carry)
    try:
        return fn(*args), carry
    finally:
        _CARRY.reset(token)


def check_calls(carry: Carry, pass_num: int) -> str:
    """"" when this pass timed the same calls as the earlier ones; else why not, in one line."""
    if not carry.prior or set(carry.new) == set(carry.prior):
        return ""
    return (f"pass {pass_num} timed {len(carry.new)} call(s) where the earlier passes timed {len(carry.prior)} "
            f"(a variant skipped in one pass and not in another?): its samples cannot be merged")


def pass_labels(results: list[Any], carry: Carry, counts: dict[str, list[int]], pass_num: int
                ) -> dict[tuple[str, str], list[int]]:
    """(variant, measure) -> the pass of each of its samples, from each call's sample count per earlier pass."""
    key_of = {id(t): key for key, t in carry.merged.items()}
    out = {}
    for r in results:
        for measure, t in r.timings.items():
            key = key_of.get(id(t))
            if key is not None:
                earlier = [p for p, n in enumerate(counts.get(key, []), 1) for _ in range(n)]
                out[(r.variant, measure)] = earlier + [pass_num] * (t.n - len(earlier))
    return out


# --- passes.json ---------------------------------------------------------------------------------------------------
def read_record(folder: Path, config_hash: str) -> list[dict]:
    """The passes recorded in ``folder`` for this config (each ``{"pass", "canary", "calls"}``), in order; empty
    when there are none, the file cannot be read, or it belongs to another config."""
    try:
        data = json.loads((folder / PASSES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or data.get("config_hash") != config_hash or not isinstance(data.get("passes"),
                                                                                             list):
        return []
    passes = [p for p in data["passes"] if isinstance(p, dict)]
    return passes if [p.get("pass") for p in passes] == list(range(1, len(passes) + 1)) else []


def write_record(folder: Path, config_hash: str, earlier: list[dict], pass_num: int, carry: Carry,
                 canary: CanaryReading | None) -> None:
    """Record pass ``pass_num`` after the ``earlier`` ones (a pass run again replaces its record)."""
    calls = {k: {"sample_ns": list(t.sample_ns), "cpu_sample_ns": list(t.cpu_sample_ns),
                 "inner_loops": list(t.inner_loops), "warmup": t.warmup} for k, t in carry.new.items()}
    entry = {"pass": pass_num, "canary": asdict(canary) if canary else None, "calls": calls}
    data = {"config_hash": config_hash, "passes": [*earlier[: pass_num - 1], entry]}
    write_text_atomic(folder / PASSES, json.dumps(data) + "\n")


def prior_of(earlier: list[dict]) -> tuple[dict[str, Timing], dict[str, list[int]]]:
    """The earlier passes' samples merged by call, and each call's sample count per pass."""
    prior: dict[str, Timing] = {}
    counts: dict[str, list[int]] = {}
    for entry in earlier:
        for key, c in entry["calls"].items():
            t = Timing(tuple(c["sample_ns"]), tuple(c["cpu_sample_ns"]), tuple(c["inner_loops"]), c["warmup"])
            prior[key] = prior[key].merged(t) if key in prior else t
            counts.setdefault(key, []).append(t.n)
    return prior, counts


def canaries(earlier: list[dict], pass_num: int, now: CanaryReading | None) -> list[dict]:
    """The point's canary readings, one per pass, as rows of ``canary.csv``."""
    readings = [(e["pass"], e.get("canary")) for e in earlier] + [(pass_num, asdict(now) if now else None)]
    return [{"pass": p, **c} for p, c in readings if c]
