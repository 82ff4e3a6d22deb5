"""The engine experiment end to end: a tiny model made, cached and run by llama.cpp and by the NumPy
reference, rows with llama-bench's tests, exact counts, fidelity, the report, and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from infer_core.measure.environment import usable_cpus
from infer_core.measure.machine import measure_machine, reference
from infer_core.model import PRESETS, write_gguf
from tests.conftest import FAST_BENCH, run_app, run_report

TINY = ["engine.model=tiny", "engine.n_prompt=48", "engine.n_gen=12", "engine.n_check=40"]
THREADS = usable_cpus()


@pytest.fixture(scope="module")
def machine_file(tmp_path_factory):
    """A machine reference for the engine's thread count, measured small (the rows need one)."""
    path = tmp_path_factory.mktemp("machine") / "machine.json"
    with threadpool_limits(THREADS, user_api="blas"):
        reference(path, measure_fn=lambda: measure_machine((128,), n_bytes=2**22))
    return path


@pytest.fixture(scope="module")
def formats_sweep(tmp_path_factory, machine_file):
    """f32 and q8_0 weights of the tiny shape, float32 KV cache, llama.cpp."""
    root = tmp_path_factory.mktemp("engine")
    sweep, models = root / "sweep", root / "models"
    proc = run_app("-m", "experiment=engine", "engine.weights=f32,q8_0", *TINY, "engine.type_k=f32",
                   "engine.type_v=f32", f"engine.models_dir={models}", f"bench.machine_file={machine_file}",
                   f"hydra.sweep.dir={sweep}", *FAST_BENCH)
    return sweep, models, proc


def rows(folder) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p) for p in sorted(folder.rglob("results.csv"))], ignore_index=True)


def test_each_point_has_a_pp_and_a_tg_row_with_llama_bench_statistics(formats_sweep):
    sweep, _, proc = formats_sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = rows(sweep)
    assert len(df) == 4 and set(df["status"]) == {"ok"}
    assert sorted(df["variant"].unique()) == ["pp48", "tg12"]
    assert (df.loc[df["test"] == "pp", "n_tokens"] == 48).all() and (df.loc[df["test"] == "tg", "n_tokens"] == 12).all()
    assert (df["tokens_per_s"] > 0).all() and (df["tokens_per_s_std"] >= 0).all()
    assert (df["tokens_per_s_q1"] <= df["tokens_per_s"]).all() and (df["tokens_per_s"] <= df["tokens_per_s_q3"]).all()
    assert (df["n_samples"] == 5).all() and (df["n_threads"] == THREADS).all()
    assert df["engine_version"].str.match(r"\d+\.\d+").all()


def test_sizes_bytes_and_flops_are_the_exact_counts(formats_sweep):
    sweep, _, _ = formats_sweep
    df = rows(sweep)
    shape = PRESETS["tiny"]
    d, kv, f, v, layers = shape.d_model, shape.n_kv_heads * shape.d_head, shape.d_ffn, shape.n_vocab, shape.n_layers
    matrices = layers * (2 * d * d + 2 * d * kv + 3 * d * f)  # per token, every layer
    norms = layers * 2 * d + d
    for weights, bits in (("f32", 32), ("q8_0", 8.5)):  # q8_0: 34 bytes per 32 weights; norms stay float32
        r = df[(df["engine.weights"] == weights) & (df["test"] == "tg")].iloc[0]
        assert r["n_params"] == shape.n_params == matrices + 2 * v * d + norms
        assert r["bits_per_weight"] == pytest.approx((bits * (matrices + 2 * v * d) + 32 * norms) / shape.n_params,
                                                     rel=1e-12)
        per_token = bits / 8 * (matrices + v * d) + bits / 8 * d + 4 * norms  # output matrix, one embedding row
        assert r["weight_bytes_per_token"] == per_token
        mean_context = 0 + (12 + 1) / 2
        assert r["kv_bytes_per_token"] == round(layers * shape.n_kv_heads * shape.d_head * mean_context * 8)
        assert r["gb_per_s"] == pytest.approx((per_token + r["kv_bytes_per_token"]) * r["tokens_per_s"] / 1e9)
    pp = df[df["test"] == "pp"].iloc[0]
    causal_keys = 48 * 49 // 2
    assert pp["flops"] == 2 * matrices * 48 + 2 * v * d + 4 * shape.d_head * shape.n_heads * layers * causal_keys
    assert pp["gflops"] == pytest.approx(pp["flops"] / pp["time_median_s"] / 1e9)


def test_fidelity_columns_agree_with_the_reference_and_the_f32_model(formats_sweep):
    sweep, _, _ = formats_sweep
    df = rows(sweep)
    f32 = df[df["engine.weights"] == "f32"].iloc[0]
    assert f32["max_rel_diff_vs_ref"] <= 1e-4 and f32["top1_agree_vs_ref"] == 1.0
    assert f32["mean_kld_vs_f32"] < 1e-6 and f32["same_top_vs_f32"] == 1.0
    q8 = df[df["engine.weights"] == "q8_0"].iloc[0]
    assert 0 < q8["mean_kld_vs_f32"] < 0.05 and q8["same_top_vs_f32"] >= 0.9
    assert q8["median_kld_vs_f32"] <= q8["p99_kld_vs_f32"] <= q8["max_kld_vs_f32"]
    assert q8["f32_mean_entropy"] < 0.5 * q8["log_vocab"] == pytest.approx(0.5 * np.log(512))  # peaked
    assert (df["check_tokens"] == 40).all()


def test_models_are_written_once_then_reused(formats_sweep, machine_file, tmp_path):
    sweep, models, _ = formats_sweep
    assert not rows(sweep)["model_reused"].any()
    files = sorted(p.name for p in models.glob("*.gguf"))
    assert len(files) == 2 and files[0].startswith("tiny-f32-seed0-")
    proc = run_app("experiment=engine", "engine.weights=q8_0", *TINY, f"engine.models_dir={models}",
                   f"bench.machine_file={machine_file}", f"hydra.run.dir={tmp_path / 'again'}", *FAST_BENCH)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reusing" in proc.stdout + proc.stderr and rows(tmp_path / "again")["model_reused"].all()
    assert sorted(p.name for p in models.glob("*.gguf")) == files


def test_the_report_shows_the_pareto_plot_and_the_roofline(formats_sweep, tmp_path):
    sweep, _, _ = formats_sweep
    proc = run_report(str(sweep), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "engine_pareto.png").stat().st_size > 10_000
    assert (tmp_path / "engine_tg_bandwidth.png").stat().st_size > 10_000
    text = (tmp_path / "report.md").read_text()
    assert "As llama-bench prints it" in text and " ± " in text


def test_numpy_backend_with_depth(machine_file, tmp_path):
    proc = run_app("experiment=engine", "engine.backend=numpy", "engine.weights=q4_0", "engine.depth=20", *TINY,
                   f"engine.models_dir={tmp_path / 'models'}", f"bench.machine_file={machine_file}",
                   f"hydra.run.dir={tmp_path / 'run'}", *FAST_BENCH)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = rows(tmp_path / "run")
    assert sorted(df["variant"]) == ["pp48 @ d20", "tg12 @ d20"]  # llama-bench's names after a filled cache
    assert len(df) == 2 and (df["max_abs_diff_vs_ref"] == 0).all()  # the reference itself
    assert "engine.type_k" not in df  # llama.cpp's knobs do not act on numpy: not in its rows
    tg = df[df["test"] == "tg"].iloc[0]
    shape = PRESETS["tiny"]
    assert tg["kv_bytes_per_token"] == round(shape.n_layers * 2 * 32 * (20 + 6.5) * 8)  # float32 K and V
    assert tg["weight_bytes_per_token"] == 4 * (shape.n_params - shape.n_vocab * shape.d_model + shape.d_model)


def _other_arch(path) -> None:
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), "gpt2")
    w.add_tensor("x", np.zeros(4, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_bad_input_is_one_line_naming_the_key(tmp_path, machine_file):
    good = write_gguf(tmp_path / "good.gguf", PRESETS["tiny"])
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size - 1000])
    _other_arch(tmp_path / "gpt2.gguf")
    cases = {
        "engine.model='gpt-5' is not a known model": ["engine.model=gpt-5"],
        "engine.weights": ["engine.weights=q7_0"],
        "engine.depth + engine.n_prompt + engine.n_gen = 2100 exceeds the context of engine.model=tiny (2048":
            ["engine.depth=2000", "engine.n_prompt=64", "engine.n_gen=36"],
        "engine.type_v=q8_0 needs engine.flash_attn=true": ["engine.type_v=q8_0"],
        f"{cut} is not a readable GGUF file: truncated or damaged": [f"engine.file={cut}"],
        "holds architecture 'gpt2'": [f"engine.file={tmp_path / 'gpt2.gguf'}"],
        "engine.shape.d_model=100 must split": ["engine.model=mine",
                                                "++engine.shape={arch: llama, d_model: 100, n_layers: 1, n_heads: 3, "
                                                "n_kv_heads: 1, d_ffn: 64, n_vocab: 300}"],
        "engine.shape: missing 5 required": ["engine.model=mine", "++engine.shape={arch: llama, d_model: 96}"],
    }
    for i, (message, args) in enumerate(cases.items()):
        proc = run_app("experiment=engine", *args, f"bench.machine_file={machine_file}",
                       f"engine.models_dir={tmp_path / 'models'}", f"hydra.run.dir={tmp_path / f'run{i}'}")
        assert proc.returncode != 0, message
        out = proc.stdout + proc.stderr
        assert message in out, (message, out[-2000:])
        assert "Traceback" not in out, out[-3000:]


def test_a_shape_given_as_data_in_yaml(machine_file, tmp_path):
    """conf/shape/smollm-135m.yaml: SmolLM-135M's published config, 134,515,008 weights."""
    proc = run_app("experiment=engine", "shape=smollm-135m", "engine.weights=q4_0", "engine.n_prompt=8",
                   "engine.n_gen=4", "engine.n_check=8", f"engine.models_dir={tmp_path / 'models'}",
                   f"bench.machine_file={machine_file}", f"hydra.run.dir={tmp_path / 'run'}", *FAST_BENCH)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = rows(tmp_path / "run")
    assert (df["engine.model"] == "smollm-135m").all() and (df["engine.shape.d_model"] == 576).all()
    assert (df["n_params"] == 134_515_008).all() and (df["top1_agree_vs_ref"] >= 0.75).all()


def test_a_depth_sweep_reports_speed_against_depth_per_cache_type(machine_file, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_app("-m", "experiment=engine", "engine.depth=0,64", "engine.type_k=f16,q8_0", *TINY,
                   f"engine.models_dir={tmp_path / 'models'}", f"bench.machine_file={machine_file}",
                   f"hydra.sweep.dir={sweep}", *FAST_BENCH)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = rows(sweep)
    assert len(df) == 8 and set(df["variant"]) == {"pp48", "tg12", "pp48 @ d64", "tg12 @ d64"}
    deep = df[(df["engine.depth"] == 64) & (df["test"] == "tg")]
    k_bytes = {"f16": 2, "q8_0": 34 / 32}  # the V cache stays f16
    for _, r in deep.iterrows():
        shape = PRESETS["tiny"]
        assert r["kv_bytes_per_token"] == round(shape.n_layers * shape.n_kv_heads * shape.d_head * (64 + 6.5)
                                                * (k_bytes[r["engine.type_k"]] + 2))
    out = tmp_path / "report"
    report = run_report(str(sweep), "--out", str(out))
    assert report.returncode == 0, report.stderr[-3000:]
    assert (out / "engine_depth.png").stat().st_size > 10_000 and "tg12 @ d64" in (out / "report.md").read_text()
