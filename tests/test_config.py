"""Config validation: every bad value is named with its full key and value."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from experiments.framework import point
from experiments.framework.app import infer_experiment
from experiments.framework.spec import ConfigError
from experiments.kv_cache.measure import check_memory
from experiments.kv_cache.schema import KVConfig
from experiments.registry import EXPERIMENTS
from tests.conftest import ROOT, run_app


def validate(cfg):
    return point.validate(cfg, EXPERIMENTS)


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="infer_sweep", overrides=list(overrides))


def test_defaults_validate():
    point = validate(composed())
    assert point.experiment.name == "kv_cache"
    assert point.knobs.n_kv_heads == point.knobs.n_heads == 4  # null resolves to n_heads
    assert point.seed == 0 and point.bench.repeats >= 5
    flat = point.flat_config()
    assert list(flat)[:2] == ["seed", "bench.warmup"]
    assert flat["kv.strategies"] == "recompute,concat,prealloc" and flat["kv.dtype"] == "float32"


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["kv.d_model=60", "kv.n_heads=8"], "kv.d_model=60 must be divisible by kv.n_heads=8"),
        (["kv.seq_len=0"], "kv.seq_len=0 must be >= 1"),
        (["kv.n_heads=8", "kv.n_kv_heads=3"], "kv.n_heads=8 must be divisible by kv.n_kv_heads=3"),
        (["kv.d_model=-64"], "kv.d_model=-64 must be >= 1"),
        (["kv.batch=0"], "kv.batch=0 must be >= 1"),
        (["kv.prompt_len=-1"], "kv.prompt_len=-1 must be >= 0"),
        (["kv.n_kv_heads=0"], "kv.n_kv_heads=0 must be >= 1"),
        (["seed=-1"], "seed=-1 must be a non-negative integer"),
        (["bench.repeats=3"], "bench.repeats=3 must be >= 5: a median and quartiles need five samples"),
        (["bench.max_seconds=0"], "bench.max_seconds=0.0 must be > 0"),
        (["kv.strategies=[prealloc,prealloc]"], "kv.strategies=['prealloc', 'prealloc'] repeats a strategy"),
        (["kv.strategies=[]"], "kv.strategies is empty"),
    ],
)
def test_cross_field_errors_name_key_and_value(overrides, message):
    with pytest.raises(ConfigError) as info:
        validate(composed(*overrides))
    assert message in str(info.value)


def test_type_errors_come_from_omegaconf_with_the_key():
    """Hydra rejects these while composing; validate() gives the same key when a config
    arrives another way (a saved job config, a test)."""
    from omegaconf import OmegaConf

    cfg = composed()
    OmegaConf.set_struct(cfg, False)
    cfg.kv = OmegaConf.create({**OmegaConf.to_container(cfg.kv), "dtype": "float16"})
    with pytest.raises(ConfigError, match=r"kv.dtype: Invalid value 'float16'"):
        validate(cfg)
    cfg.experiment = "nope"
    with pytest.raises(ConfigError, match="experiment=nope is unknown: choose one of kv_cache"):
        validate(cfg)


def test_memory_estimate_fails_before_allocating():
    cfg = KVConfig(d_model=8192, n_heads=64, n_layers=32, seq_len=1_000_000)
    with pytest.raises(ConfigError, match=r"kv point needs about \d+\.\d+ GiB \(weights .*KV cache .*\) but only"):
        check_memory(cfg)
    check_memory(KVConfig())  # the default point fits


def test_cli_config_error_is_one_clear_message(tmp_path):
    proc = run_app("kv.d_model=60", "kv.n_heads=8", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 1
    assert "kv.d_model=60 must be divisible by kv.n_heads=8" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and "failed" in rows[1]


@pytest.mark.parametrize(
    "override,message",
    [
        ("kv.foo=1", "Key 'foo' not in 'KVConfig'"),
        ("kv.d_model=abc", "Value 'abc' of type 'str' could not be converted to Integer"),
        ("kv.dtype=float16", "Invalid value 'float16', expected one of [float32, float64]"),
        ("experiment=nope", "Could not find 'experiment/nope'"),
    ],
)
def test_cli_unknown_keys_and_bad_types_get_hydras_error(tmp_path, override, message):
    proc = run_app(override, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["quant.bits=1"], "quant.bits=1 must be between 2 and 8"),
        (["quant.granularity=per_group", "quant.group_size=100"], "quant.group_size=100 must divide quant.cols=512"),
        (["quant.format=nf4", "quant.cols=100"], "quant.cols=100 must be a multiple of 64 for quant.format=nf4"),
        (["quant.sample_pairs=20000"], "quant.sample_pairs=20000 must be <= 10000"),
        (["quant.rows=0"], "quant.rows=0 must be >= 1"),
    ],
)
def test_quantization_errors_name_key_and_value(overrides, message):
    with pytest.raises(ConfigError) as info:
        validate(composed("experiment=quantization", *overrides))
    assert message in str(info.value)


def test_quantization_method_presets_set_their_keys():
    point = validate(composed("experiment=quantization", "qmethod=int4_g32"))
    assert point.knobs.spec.label == "int4 symmetric per_group g32"
    point = validate(composed("experiment=quantization", "qmethod=q4_k", "quant.cols=1024"))
    assert point.knobs.spec.label == "q4_k" and point.knobs.cols == 1024


def test_the_experiment_is_inferred_from_its_knobs():
    def infer(args):
        return infer_experiment(args, EXPERIMENTS, "kv_cache")

    assert infer(["-m", "quant.granularity=a,b", "quant.bits=8,4"]) == [
        "-m", "experiment=quantization", "quant.granularity=a,b", "quant.bits=8,4"]
    assert "experiment=matmul" in infer(["-m", "bench.threads=1,2", "matmul.size=256,512"])
    assert infer(["qmethod=q4_k", "--cfg", "job"]) == ["experiment=quantization", "qmethod=q4_k", "--cfg", "job"]
    assert "experiment=matmul" in infer(["-m", "mmcase=qkv_decode,square_256"])
    assert infer(["kv.d_model=128"]) == ["kv.d_model=128"]  # the default experiment
    for unchanged in (["experiment=matmul", "quant.bits=4"], ["sweep=demo_kv", "quant.bits=4"],
                      ["bench.threads=2"], ["kv.seq_len=3", "quant.bits=4"]):
        assert infer(unchanged) == unchanged


@pytest.mark.parametrize(
    "overrides,absent,present",
    [
        (["experiment=quantization", "qmethod=q4_0"],
         {"bits", "scheme", "granularity", "group_size", "scale_dtype"}, {"format", "rows", "cols", "distribution"}),
        (["experiment=quantization", "qmethod=nf4"], {"bits", "scheme", "granularity", "group_size"}, {"scale_dtype"}),
        (["experiment=quantization", "qmethod=int8_per_channel"], {"group_size"}, {"bits", "scheme", "granularity"}),
        (["experiment=quantization", "qmethod=int4_g32"], set(), {"bits", "group_size"}),
        (["experiment=matmul", "mmcase=square_256"], {"d_model", "tokens", "ffn_mult"}, {"size", "shape"}),
        (["experiment=matmul", "mmcase=qkv_decode"], {"size"}, {"d_model", "tokens", "ffn_mult"}),
    ],
)
def test_a_row_carries_only_the_knobs_that_acted(overrides, absent, present):
    pt = validate(composed(*overrides))
    keys = {k.split(".", 1)[1] for k in pt.flat_config() if k.startswith(pt.experiment.key + ".")}
    assert not keys & absent and present <= keys


def test_config_hash_ignores_knobs_that_did_not_act():
    def hash_of(*overrides):
        return validate(composed("experiment=quantization", *overrides)).config_hash

    assert hash_of("quant.format=q4_0", "quant.bits=4") == hash_of("quant.format=q4_0", "quant.bits=8")
    assert hash_of("quant.format=uniform", "quant.bits=4") != hash_of("quant.format=uniform", "quant.bits=8")
    assert hash_of("quant.granularity=per_channel", "quant.group_size=32") == hash_of("quant.group_size=64")
