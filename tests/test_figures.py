"""Every figure of every experiment, rendered from small sweeps, is readable: no two texts overlap (tick labels,
legends, axis titles, annotations, measured with the renderer's own text extents), no text under 9 points, no
axis with a single labelled tick; and the labels say what they mean."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest

from experiments.registry import EXPERIMENTS
from experiments.reporting import legibility, plotting
from experiments.reporting.gather import build_report
from experiments.serve.scripted import spawn
from tests.conftest import FAST_BENCH, run_app, run_apps

matplotlib.use("Agg")

MACHINE = ["bench.threads=1"]
SWEEPS = {
    "kv_cache": ["kv.seq_len=5,20,80", "kv.d_model=16", "kv.n_heads=2", *FAST_BENCH, *MACHINE],
    "quantization": ["experiment=quantization", "qmethod=q8_0,q4_0,q4_k,int4_g32", "quant.rows=64", "quant.cols=256",
                     *FAST_BENCH],
    "matmul": ["experiment=matmul", "matmul.size=128,512,2048", "matmul.weights=[fp32]", *FAST_BENCH, *MACHINE],
    "matmul_ops": ["experiment=matmul", "mmcase=qkv_decode", *FAST_BENCH, *MACHINE],
    "engine": ["experiment=engine", "engine.weights=f32,q4_0", "engine.model=tiny", "engine.n_prompt=48",
               "engine.n_gen=12", "engine.n_check=40", "engine.type_k=f32", "engine.type_v=f32"],
    "attention": ["experiment=attention", "attn.impl=naive,flash", "attn.seq_len=64,160", "attn.d_head=16",
                  "attn.n_heads=4", "attn.n_kv_heads=2", "attn.check_rows=64", "attn.block_q=32", "attn.block_k=48",
                  *FAST_BENCH],
    "kv_memory": ["experiment=kv_memory", "mem.dataset=sharegpt", "mem.n_requests=60", "mem.block_sizes=[1,16]",
                  "mem.samples=[2,4]", "mem.sharing_requests=20"],  # one trace: one axes, its legend below it
    "batching": ["experiment=batching", "batch.policy=static,continuous", "batch.cost=measured,model",
                 "batch.d_model=64", "batch.n_heads=4", "batch.n_kv_heads=2", "batch.d_ffn=96", "batch.n_requests=8",
                 "batch.output_len=8", "batch.max_len=48", "batch.calibration_requests=6",
                 "batch.check_requests=2"],
}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, dict[str, list[str]], dict[str, list[str]]]:
    """Small sweeps of every experiment (serve against a scripted server) and one report over them all; every
    figure checked as it is saved."""
    root = tmp_path_factory.mktemp("figures")
    machine = root / "machine.json"
    runs = [run_app("experiment=machine", "machine.gemm_sizes=[128,256]", "machine.stream_mib=16", *MACHINE,
                    f"bench.machine_file={machine}", f"hydra.run.dir={root / 'sweeps' / 'machine'}")]
    with spawn("--ttft-ms", "20", "--itl-ms", "4") as (url, _):
        runs += run_apps(*[["-m", *args, f"bench.machine_file={machine}", f"hydra.sweep.dir={root / 'sweeps' / name}"]
                           for name, args in SWEEPS.items()],
                         ["-m", "experiment=serve", f"serve.url={url}", "serve.concurrency=1,4", "serve.rate=8,inf",
                          "serve.n_requests=8", f"hydra.sweep.dir={root / 'sweeps' / 'serve'}"])
    assert all(r.returncode == 0 for r in runs), [r.stderr[-1500:] for r in runs if r.returncode]
    found: dict[str, list[str]] = {}
    words: dict[str, list[str]] = {}

    def audit(fig, path):
        found[path.name] = legibility.text_problems(fig)
        words[path.name] = [text for text, *_ in legibility.texts(fig)]

    plotting.AUDITS.append(audit)
    try:
        build_report([root / "sweeps"], root / "report", machine, EXPERIMENTS)
    finally:
        plotting.AUDITS.pop()
    return root, found, words


EXPECTED = ["kv_cache_time_vs_seq_len.png", "kv_cache_projections_vs_seq_len.png", "kv_cache_speedup_vs_seq_len.png",
            "matmul_gflops_vs_size.png", "engine_pareto.png", "engine_tg_bandwidth.png", "attention_scaling.png",
            "kv_memory_policies.png", "serve_latency_throughput.png", "serve_ttft.png", "roofline.png",
            "canary_over_time.png"]


def test_every_figure_of_every_experiment_has_no_overlapping_or_tiny_text(report):
    _, found, _ = report
    assert set(EXPECTED) <= set(found), sorted(found)
    bad = {name: problems for name, problems in found.items() if problems}
    assert bad == {}, "\n".join(f"{n}: {'; '.join(p[:6])}" for n, p in bad.items())


def test_labels_say_what_they_mean(report):
    """Thread counts as whole numbers, in words; file sizes as llama-bench prints them; only the server the point
    started is called embedded; every timed table shows its noise flag."""
    root, _, words = report
    every = [w for texts in words.values() for w in texts]
    assert not [w for w in every if re.search(r"\d\.0 thr| thr\b", w)]
    md = (root / "report" / "report.md").read_text()
    assert "0.00 GiB" not in md and re.search(r"\| \d+\.\d\d MiB \|", md)  # the tiny model's file
    serve = [w for w in words["serve_latency_throughput.png"] if "@" in w]
    assert serve and not [w for w in serve if "embedded" in w]  # a server given by URL is the user's
    for experiment in ("kv_cache", "quantization", "matmul", "attention", "engine"):
        section = md.split(f"## Experiment `{experiment}`")[1].split("### Results")[1].split("\n\n")[1]
        assert "| unstable |" in section.splitlines()[0] or " unstable |" in section.splitlines()[0], experiment
