"""llama.cpp's own benchmark (built by ``make tools``) on a file, threads and tests, its JSON output parsed into
timings: ``engine.backend=llama_bench`` makes its rows of them, serve's reference its tg.

llama-bench runs its own warm-up, then ``-r`` repetitions of each test, each from a cache filled to ``-d`` tokens
with synthetic tokens; its JSON gives every repetition's time (``samples_ns``), which become the row's samples, so
the row's median and spread are computed as ours are. It does not count tokenization or sampling (its README says
so); neither does our in-process test.
"""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

from experiments.framework.passes import carried_rounds
from experiments.shared.llama_tools import tool
from infer_core.measure.timing import Timing

log = logging.getLogger(__name__)


class LlamaBenchError(RuntimeError):
    """llama-bench failed or printed no result; the message has its last line."""


@dataclass(frozen=True)
class LlamaBenchTest:
    """One test as llama-bench reports it: its tokens and the time of each repetition."""

    test: str  # "pp" or "tg"
    n_tokens: int
    depth: int
    samples_ns: tuple[int, ...]
    build: str  # "b<number> (<commit>)"
    record: dict  # llama-bench's whole JSON object of the test

    @property
    def timing(self) -> Timing:
        """The repetitions as samples of one call each (llama-bench gives no CPU time: those are 0)."""
        return Timing(self.samples_ns, (0,) * len(self.samples_ns), 1, 1)


def command(path: Path, threads: int, n_prompt: int, n_gen: int, depth: int, n_batch: int, n_ubatch: int,
            flash_attn: bool, type_k: str, type_v: str, repetitions: int) -> list[str]:
    """llama-bench's command line for the engine point's tests (JSON to stdout)."""
    return [str(tool("llama-bench")), "-m", str(path), "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen),
            "-d", str(depth), "-b", str(n_batch), "-ub", str(n_ubatch), "-fa", "on" if flash_attn else "off",
            "-ctk", type_k, "-ctv", type_v, "-r", str(repetitions), "-o", "json"]


def parse(stdout: str) -> list[LlamaBenchTest]:
    """The tests of llama-bench's ``-o json`` output."""
    tests = []
    for rec in json.loads(stdout):
        pp = rec["n_gen"] == 0
        tests.append(LlamaBenchTest("pp" if pp else "tg", int(rec["n_prompt"] if pp else rec["n_gen"]),
                                    int(rec.get("n_depth", 0)), tuple(int(x) for x in rec["samples_ns"]),
                                    f"b{rec.get('build_number', '?')} ({rec.get('build_commit', '?')})", rec))
    return tests


def run(cmd: list[str], timeout_s: float) -> list[LlamaBenchTest]:
    """Run llama-bench; its tests, or :class:`LlamaBenchError` with its last line."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise LlamaBenchError(f"llama-bench did not finish within {timeout_s:g} s (bench.max_seconds): "
                              f"{' '.join(cmd)}") from None
    last = next((x for x in reversed(proc.stderr.splitlines()) if x.strip()), "")
    if proc.returncode != 0:
        raise LlamaBenchError(f"llama-bench exited with {proc.returncode}: {last.strip()}")
    try:
        return parse(proc.stdout)
    except (ValueError, KeyError) as exc:
        raise LlamaBenchError(f"llama-bench printed no JSON result ({exc}): {last.strip()}") from None


def timings(cmd: list[str], timeout_s: float, common: dict) -> dict[str, Timing | str]:
    """llama-bench's timing of each test of ``cmd`` (or, in place of one, why it has none); its build goes into
    ``common["engine_version"]``."""
    log.info("running %s", " ".join(cmd))
    try:
        tests = run(cmd, timeout_s)
    except LlamaBenchError as exc:
        return {"pp": str(exc), "tg": str(exc)}
    if tests:
        common["engine_version"] = f"llama-bench {tests[0].build}"
    return carried_rounds({t.test: t.timing for t in tests})  # in a later pass, after the earlier passes' samples
