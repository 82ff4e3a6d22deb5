"""A new user's first hour: the base install (no extras) prints --help and runs a KV sweep; a sweep's lines say
where it is and how long is left; the long steps say what they do before they start."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata

from experiments.framework.job import JobInfo, duration
from tests.conftest import FAST_BENCH, ROOT


def optional_modules() -> tuple[str, ...]:
    """The modules of every package an extra of pyproject.toml names ([test], [engine], ...), as installed here:
    none of them may be needed to import the app. (A hydra plugin is its own sub-package of ``hydra_plugins``.)"""
    text = (ROOT / "pyproject.toml").read_text()
    extras = text.split("[project.optional-dependencies]")[1].split("\n[")[0]
    names = set(re.findall(r'"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*[<>=!~;"]', extras))
    modules = set()
    for name in names:
        try:
            files = metadata.distribution(name).files or []
        except metadata.PackageNotFoundError:
            continue
        for f in files:
            parts = f.parts
            if f.suffix == ".py" and len(parts) > 1 and not parts[0].endswith((".dist-info", ".data")):
                modules.add(".".join(parts[:2]) if parts[0] == "hydra_plugins" else parts[0])
    return tuple(sorted(modules))


OPTIONAL = optional_modules()
BLOCKED = f"""
import importlib.abc, runpy, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == m or name.startswith(m + ".") for m in {OPTIONAL!r}):
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: an optional extra)", name=name)
sys.meta_path.insert(0, Missing())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_without_extras(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKED, str(ROOT / "experiments" / "run.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)


def test_the_base_install_prints_help_and_runs_a_kv_sweep(tmp_path):
    assert {"llama_cpp", "pytest", "html5lib"} <= set(OPTIONAL)  # the extras are installed here, and blocked
    help_ = run_without_extras("--help")
    assert help_.returncode == 0, help_.stderr[-2000:]
    assert "kv.seq_len" in help_.stdout and "ModuleNotFoundError" not in help_.stderr
    sweep = run_without_extras("-m", "kv.seq_len=5,10", "kv.d_model=16", "kv.n_heads=2", *FAST_BENCH,
                               f"hydra.sweep.dir={tmp_path / 's'}")
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    assert len(list((tmp_path / "s").glob("*/point.json"))) == 2
    out = sweep.stdout + sweep.stderr  # each point's line says where the sweep is and how long is left
    assert "[1/2] job 0: kv.seq_len=5" in out and "[2/2, about " in out and "left] job 1: kv.seq_len=10" in out


def test_the_time_left_follows_the_pace_so_far():
    job = JobInfo(ROOT, progress="3/10/1000.0")
    assert job.position(now=1060.0) == "[3/10, about 4 min left]"  # 30 s a point, 8 to go
    assert JobInfo(ROOT, progress="1/4/0").position(now=5.0) == "[1/4]"
    assert JobInfo(ROOT).position() == ""
    assert [duration(s) for s in (0.2, 40, 150, 7300)] == ["1 s", "40 s", "2 min", "2 h 2 min"]


def test_the_machine_reference_announces_itself_before_it_measures(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "run.py"), "experiment=machine",
                           "machine.gemm_sizes=[64]", "machine.stream_mib=4",
                           f"bench.machine_file={tmp_path / 'm.json'}", f"hydra.run.dir={tmp_path / 'r'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    announce, done = out.index("measuring this machine at"), out.index("job 0 ok")
    assert announce < done and "cached in" in out[announce:done]


def test_help_for_one_experiment_lists_its_knobs_and_the_shared_ones():
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "run.py"), "experiment=serve", "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-1000:]
    assert "serve.url=" in proc.stdout and "bench.repeats=" in proc.stdout and "sweep.name=" in proc.stdout
    assert "kv.seq_len=" not in proc.stdout and "quant.bits=" not in proc.stdout
    report = subprocess.run([sys.executable, str(ROOT / "experiments" / "report.py"), "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert "report.py compare" in report.stdout and "--fail-above" in report.stdout
