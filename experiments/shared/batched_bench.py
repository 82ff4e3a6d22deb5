"""``llama-batched-bench`` (built by ``make tools``): llama.cpp decoding B sequences together, no HTTP, no
sampling. B prompts of ``n_prompt`` tokens are processed, then ``n_gen`` steps each decode one token of every
sequence; S_TG = B × n_gen / the time of those steps, the generation throughput a server with B busy slots could
reach at best."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from experiments.shared.llama_tools import run_tool, tool


@dataclass(frozen=True)
class BatchedRow:
    """One line of llama-batched-bench's table: batch B, prompt and generation speed (tokens/s, all sequences)."""

    batch: int
    pp_tokens_per_s: float  # S_PP
    tg_tokens_per_s: float  # S_TG


def command(path: Path, threads: int, n_prompt: int, n_gen: int, batches: list[int],
            flash_attn: bool = False) -> list[str]:
    return [str(tool("llama-batched-bench")), "-m", str(path), "-t", str(threads), "-c",
            str(max(batches) * (n_prompt + n_gen) + 16), "-b", "2048", "-ub", "512", "-npp", str(n_prompt),
            "-ntg", str(n_gen), "-npl", ",".join(map(str, batches)), "-fa", "on" if flash_attn else "off"]


def parse(stdout: str) -> dict[int, BatchedRow]:
    """The rows of its markdown table, whose columns are
    ``| PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | T s | S t/s |``."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 10 and cells[0].isdigit():
            rows[int(cells[2])] = BatchedRow(int(cells[2]), float(cells[5]), float(cells[7]))
    return rows


def run(path: Path, threads: int, n_prompt: int, n_gen: int, batches: list[int], timeout_s: float = 600.0,
        flash_attn: bool = False) -> dict[int, BatchedRow]:
    """Run it; its rows by batch size (RuntimeError with its last line when it fails or keeps losing rows)."""
    proc = run_tool(command(path, threads, n_prompt, n_gen, batches, flash_attn),
                    lambda out: set(parse(out)) == set(batches), timeout_s)
    rows = parse(proc.stdout)
    if proc.returncode != 0 or set(rows) != set(batches):
        last = next((x for x in reversed(proc.stderr.splitlines()) if x.strip()), "no output")
        raise RuntimeError(f"llama-batched-bench failed (exit {proc.returncode}, rows for batches {sorted(rows)} of "
                           f"{batches}): {last.strip()}")
    return rows
