"""Matmul counts, the roofline, the machine cache, and weight-only INT8 error bounds."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from infer_core.matmul import bytes_moved, dequant_matmul, op_shape, quantize_weights, weight_bytes
from infer_core.measure import machine
from infer_core.measure.machine import MachineRef, roofline


@pytest.mark.parametrize(
    "op,shape",
    [("square", (512, 512, 512)), ("qkv", (7, 4096, 12288)), ("attn_out", (7, 4096, 4096)),
     ("ffn_up", (7, 4096, 16384)), ("ffn_down", (7, 16384, 4096))],
)
def test_op_shapes_and_flops(op, shape):
    g = op_shape(op, size=512, d_model=4096, tokens=7, ffn_mult=4)
    assert (g.m, g.k, g.n) == shape
    assert g.flops == 2 * shape[0] * shape[1] * shape[2]


def test_bytes_by_hand():
    g = op_shape("attn_out", d_model=4096, tokens=1)  # a decode GEMV
    fp32 = bytes_moved(g, 4, "fp32")
    assert fp32 == {"x": 4096 * 4, "y": 4096 * 4, "w": 4096 * 4096 * 4}
    assert g.flops / sum(fp32.values()) == pytest.approx(0.5, rel=1e-3)  # a decode GEMV: ~0.5 FLOP per byte in fp32
    int8 = bytes_moved(g, 4, "int8_dequant")
    assert int8 == {"x": 16384, "y": 16384, "w_int8": 4096 * 4096 + 4096 * 2, "w_dequantized": 2 * 4096 * 4096 * 4}
    assert weight_bytes(g, 4, "int8_dequant") == 4096 * 4096 + 8192
    assert weight_bytes(g, 8, "fp32") == 4096 * 4096 * 8
    with pytest.raises(ValueError, match="op='mlp'"):
        op_shape("mlp")


def test_roofline_is_the_lower_roof_and_ridge():
    # peak 100 GFLOP/s, 20 GB/s: ridge at 5 FLOP/byte
    low = roofline(flops=1e9, n_bytes=1e9, peak_gflops=100, bandwidth_gbps=20)
    assert (low.intensity, low.attainable_gflops, low.ridge_point, low.bound) == (1.0, 20.0, 5.0, "bandwidth")
    high = roofline(flops=1e10, n_bytes=1e9, peak_gflops=100, bandwidth_gbps=20)
    assert (high.attainable_gflops, high.bound) == (100.0, "compute")
    at = roofline(flops=5e9, n_bytes=1e9, peak_gflops=100, bandwidth_gbps=20)
    assert at.attainable_gflops == 100.0 and at.bound == "compute"
    with pytest.raises(ValueError):
        roofline(1, 0, 1, 1)


def fake(value: float) -> MachineRef:
    return MachineRef(value, value / 2, 10.0, 9.0, 12.0, (64,), 1 << 20, "2026-01-01T00:00:00+00:00")


def test_machine_cache_is_reused_and_invalidated(tmp_path, monkeypatch):
    path = tmp_path / "machine.json"
    calls = []

    def measure_fn(value=100.0):
        calls.append(value)
        return fake(value)

    key = {"cpu": "X", "n_cpus": 2, "numpy": "2.0", "blas": "openblas 0.3", "blas_threads": 1}
    monkeypatch.setattr(machine, "machine_key", lambda: dict(key))
    ref, measured = machine.reference(path, measure_fn=measure_fn)
    assert measured and ref.sgemm_gflops == 100.0 and calls == [100.0]
    ref, measured = machine.reference(path, measure_fn=measure_fn)  # same key: from the file
    assert not measured and ref == fake(100.0) and len(calls) == 1
    key["blas_threads"] = 2  # new key: measured, and the first entry is kept
    ref, measured = machine.reference(path, measure_fn=lambda: measure_fn(200.0))
    assert measured and ref.sgemm_gflops == 200.0
    assert [e["key"]["blas_threads"] for e in json.loads(path.read_text())["entries"]] == [1, 2]
    key["numpy"] = "2.1"
    assert machine.reference(path, measure_fn=lambda: measure_fn(300.0))[1]
    key["numpy"] = "2.0"  # back to an old key: cached, unless forced
    assert machine.reference(path, measure_fn=measure_fn)[0].sgemm_gflops == 200.0
    assert machine.reference(path, force=True, measure_fn=lambda: measure_fn(250.0))[0].sgemm_gflops == 250.0
    assert len(json.loads(path.read_text())["entries"]) == 3


@pytest.mark.parametrize("text", ["{not json", "a,b\n1,2\n", '{"other": "tool"}', '[1, 2]'])
def test_a_file_that_is_not_a_machine_reference_is_never_overwritten(tmp_path, text):
    path = tmp_path / "notes.json"
    path.write_text(text)
    with pytest.raises(machine.MachineFileError, match=f"{path} is .*not a machine reference"):
        machine.reference(path, measure_fn=lambda: fake(1.0))
    assert path.read_text() == text


def test_an_unreadable_entry_is_reported_and_the_others_kept(tmp_path, monkeypatch):
    path = tmp_path / "machine.json"
    key = {"cpu": "X", "n_cpus": 2, "numpy": "2.0", "blas": "openblas 0.3", "blas_threads": 1}
    other = {"key": {**key, "blas_threads": 2}, "ref": asdict(fake(50.0))}
    old = {"key": {**key, "blas_threads": 4}, "ref": {"sgemm_gflops": 1.0}}  # written by another version
    path.write_text(json.dumps({"written_by": machine.WRITTEN_BY, "entries": [other, "junk", old]}))
    monkeypatch.setattr(machine, "machine_key", lambda: dict(key))
    with pytest.warns(UserWarning) as caught:
        ref, measured = machine.reference(path, measure_fn=lambda: fake(100.0))
    messages = [str(w.message) for w in caught]
    assert any(f"{path}: entry 1 ignored: not an object" in m for m in messages)
    assert any(f"{path}: entry 2 ignored: its reference lacks " in m for m in messages)
    assert measured and ref.sgemm_gflops == 100.0
    kept = json.loads(path.read_text())["entries"]
    assert [e["key"]["blas_threads"] for e in kept] == [2, 4, 1]  # the others kept, the new one added


def test_the_report_roofs_keep_the_newest_measurement_per_thread_count(tmp_path):
    """A file holding an older measurement at the same thread count (other library versions or kernels) draws one
    roof per thread count: the newest."""
    from experiments.reporting.roofline import roofs

    key = {"cpu": "X", "n_cpus": 2, "numpy": "2.0", "blas": "openblas 0.3", "blas_threads": 2}
    entries = [{"key": {**key, "kernels": 2}, "ref": {**asdict(fake(200.0)), "measured_utc": "2026-11-30T12:00:00"}},
               {"key": key, "ref": {**asdict(fake(100.0)), "measured_utc": "2026-11-01T12:00:00"}},
               {"key": {**key, "blas_threads": 1}, "ref": asdict(fake(50.0))}]
    path = tmp_path / "machine.json"
    path.write_text(json.dumps({"entries": entries}))
    got = roofs(path)
    assert got["blas_threads"].tolist() == [1, 2] and got["sgemm"].tolist() == [50.0, 200.0]


def test_bandwidth_roof_is_the_better_of_copy_and_read():
    assert fake(1.0).bandwidth_gbps == 12.0
    assert fake(1.0).peak_gflops("float64") == 0.5 and fake(1.0).peak_gflops("float32") == 1.0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_int8_dequant_within_the_quantization_error(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 256)).astype(dtype)
    w = rng.standard_normal((256, 96)).astype(dtype)
    wq = quantize_weights(w)
    y = dequant_matmul(x, wq)
    assert y.dtype == np.dtype(dtype)
    exact = x.astype(np.float64) @ w.astype(np.float64)
    # each weight is off by at most half its column's step: |Δy| <= Σ_k |x_k| · scale_n / 2
    bound = np.abs(x.astype(np.float64)) @ np.ones((256, 1)) * (wq.scales.astype(np.float64) / 2)[None, :]
    err = np.abs(y - exact)
    assert (err <= bound * 1.001 + 1e-4).all()
    assert err.max() > 0  # and the int8 path really is lossy
    np.testing.assert_allclose(x @ w, exact, rtol=1e-4, atol=1e-3)


def test_small_machine_measurement_runs(tmp_path):
    ref = machine.measure_machine(gemm_sizes=(64,), n_bytes=1 << 20)
    assert ref.sgemm_gflops > 0 and ref.dgemm_gflops > 0 and ref.copy_gbps > 0 and ref.triad_gbps > 0
    assert ref.read_gbps > 0 and ref.gemm_sizes == (64,) and ref.stream_bytes == 1 << 20


def test_jobs_that_need_the_reference_at_once_measure_it_once(tmp_path):
    """Four jobs (threads here, each opening the lock itself as a process would) ask for a missing reference
    together: one measures, the others wait and read what it wrote."""
    import threading
    import time

    small = machine.measure_machine(gemm_sizes=(64,), n_bytes=1 << 20)
    calls = []

    def slow_measure() -> MachineRef:
        calls.append(1)
        time.sleep(0.3)
        return small

    got = []
    jobs = [threading.Thread(target=lambda: got.append(machine.reference(tmp_path / "m.json",
                                                                         measure_fn=slow_measure)))
            for _ in range(4)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    assert len(calls) == 1 and sorted(measured for _, measured in got) == [False, False, False, True]
    assert all(ref == small for ref, _ in got)


@pytest.mark.parametrize("threads", [1, 2])
def test_copy_kernel_copies_every_part_and_counts_read_plus_write(threads):
    with machine.copy_kernel(n_bytes=1 << 16, threads=threads) as copy:
        assert copy.n_bytes == 2 * (1 << 16)  # 8192 float64 read + written
        assert [p.stop - p.start for p in copy.parts] == [8192 // threads] * threads
        a, b = copy.arrays
        b[:] = 0
        copy()
        assert np.array_equal(a, b) and a.any()


def test_report_labels_and_log_ticks_are_short_and_plain():
    """Points sharing a place get one label with the common suffix once; log axes read "20k", not "2×10⁴", with
    matplotlib's choice of labelled ticks (all on an axis spanning little, 2 3 4 6 where one power of ten is in
    view, none between the powers of ten on a wide one)."""
    import matplotlib.pyplot as plt

    from experiments.reporting.plotting import plain, plain_log_ticks
    from experiments.reporting.roofline import join_labels

    assert join_labels(["qkv (1 token)", "ffn_up (1 token)"]) == "qkv, ffn_up (1 token)"
    assert join_labels(["qkv (1 token)", "square"]) == "qkv (1 token), square"
    assert [plain(x) for x in (0.05, 30, 4000, 20000, 3e6)] == ["0.05", "30", "4000", "20k", "3M"]
    fig, (ratios, narrow, wide) = plt.subplots(1, 3)
    ratios.set(xscale="log", xlim=(0.6, 1.5))
    narrow.set(xscale="log", xlim=(3000, 50000))
    wide.set(xscale="log", xlim=(1, 1e5))
    plain_log_ticks(fig)
    fig.canvas.draw()  # matplotlib's formatter chooses which ticks to label when the axis is drawn
    assert [ratios.xaxis.get_minor_formatter()(x) for x in (0.7, 0.8)] == ["0.7", "0.8"]
    minor = narrow.xaxis.get_minor_formatter()
    assert [minor(x) for x in (4000, 5000, 20000, 30000)] == ["4000", "", "20k", "30k"]  # one power of ten: 2 3 4 6
    assert wide.xaxis.get_minor_formatter()(5000) == "" and wide.xaxis.get_major_formatter()(1000) == "1000"
    plt.close(fig)
