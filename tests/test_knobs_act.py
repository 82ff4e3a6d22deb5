"""Every declared knob acts: each experiment's smallest point is run with its knobs watched, and a knob that is
active (not in ``inactive()``) but never read inside the point's run is a knob that does nothing (validation and
hashing do not count: they happen before the watch starts)."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest

from experiments.framework.validate import validate
from experiments.registry import EXPERIMENTS
from experiments.serve.scripted import spawn
from tests.conftest import FAST_BENCH
from tests.test_config import composed

SMALLEST = {
    "kv_cache": ["kv.seq_len=6", "kv.d_model=16", "kv.n_heads=2"],
    "quantization": ["experiment=quantization", "quant.rows=8", "quant.cols=64"],
    "matmul": ["experiment=matmul", "matmul.size=64"],
    "machine": ["experiment=machine", "machine.gemm_sizes=[64]", "machine.stream_mib=4"],
    "engine": ["experiment=engine", "engine.n_prompt=16", "engine.n_gen=4", "engine.n_check=8"],
    "attention": ["experiment=attention", "attn.seq_len=64", "attn.d_head=16", "attn.check_rows=8"],
    "kv_memory": ["experiment=kv_memory", "mem.n_requests=40", "mem.samples=[2]", "mem.sharing_requests=10"],
    "batching": ["experiment=batching", "batch.d_model=32", "batch.n_heads=2", "batch.n_kv_heads=1", "batch.d_ffn=48",
                 "batch.n_requests=4", "batch.output_len=4", "batch.max_len=32", "batch.check_requests=1",
                 "batch.rate=50"],
    "serve": ["experiment=serve", "serve.n_requests=2", "serve.warmup_requests=1"],
    "quality": ["experiment=quality", "quality.n_ctx=64", "quality.n_tokens=128", "quality.type_k=q8_0",
                "quality.flash_attn=true", "quality.buckets=[0,16]", "quality.weights=q4_0", "quality.n_prompt=16",
                "quality.n_gen=4", "quality.threads=1"],
}


def watched(knobs: object) -> tuple[object, set[str]]:
    """``knobs`` as an instance of a subclass that records every knob read from it."""
    names, seen = {f.name for f in dataclasses.fields(knobs)}, set()

    class Watched(type(knobs)):  # type: ignore[misc, valid-type]
        def __getattribute__(self, name: str) -> object:
            if name in names:
                seen.add(name)
            return object.__getattribute__(self, name)

    spy = object.__new__(Watched)
    spy.__dict__.update(knobs.__dict__)
    return spy, seen


@pytest.fixture(scope="module")
def machine_file(tmp_path_factory):
    """A small machine reference, measured once for every point that reads one (the default sizes take 20 s)."""
    from infer_core.measure.machine import measure_machine, reference

    path = tmp_path_factory.mktemp("machine") / "machine.json"
    reference(path, measure_fn=lambda: measure_machine((64,), 4 * 2**20))
    return path


@pytest.mark.parametrize("name", sorted(SMALLEST))
def test_every_active_knob_is_read_by_the_point(name, machine_file):
    assert set(SMALLEST) == set(EXPERIMENTS)  # every experiment has its smallest point here
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(spawn())[0] if name == "serve" else None  # a server only where one is asked
        args = [*SMALLEST[name], *([f"serve.url={url}"] if url else []), *FAST_BENCH,
                f"bench.machine_file={machine_file}"]
        point = validate(composed(*args), EXPERIMENTS)
        knobs, seen = watched(point.knobs)
        results = point.experiment.run(knobs, point.bench, point.seed)
    assert results and all(r.status == "ok" for r in results), [r.error for r in results]
    active = {f.name for f in dataclasses.fields(point.knobs)} - set(point.knobs.inactive())
    assert active - seen == set(), f"{name}: declared, active, never read in the run: {sorted(active - seen)}"
