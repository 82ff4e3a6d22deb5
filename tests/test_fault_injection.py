"""Random faults never lose or fake a point: 10 seeded trials of a 6-point sweep, each hit by a SIGKILL,
a SIGINT or a full disk at a random moment, then rerun cleanly; afterwards every point is complete
exactly once, with no duplicate row and no partial file. A native crash (SIGSEGV in a point's child process)
fails that point alone, and a resume completes it."""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass

import numpy as np
import pytest

from experiments.framework.app import register_schemas
from experiments.framework.bench import BenchConfig
from experiments.framework.spec import Column, Experiment, Knobs, Report, VariantResult, knob
from experiments.framework.sweep import SweepError
from experiments.registry import EXPERIMENTS
from tests.conftest import FAST_BENCH, ROOT
from tests.faults import check_complete, resize_tmpfs, small_disk, sweep_cmd
from tests.test_framework import sweep_in_process

POINTS = "kv.seq_len=3,4,5,6,7,8"
SETTINGS = ["kv.d_model=8", "kv.n_heads=2", "bench.repeats=5", "bench.min_sample_s=0.005", "bench.threads=1"]
TRIALS = 10


def faulted_run(cmd: list[str], fault: str, delay: float) -> int:
    """Run ``cmd`` and, for a signal fault, deliver it after ``delay`` seconds; the exit code."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if fault != "disk":
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL if fault == "kill" else signal.SIGINT)
    return proc.wait(timeout=120)


def test_seeded_faults_then_a_clean_rerun_leave_every_point_complete_once(tmp_path):
    rng = np.random.default_rng(2026)
    seen = {}
    for trial in range(TRIALS):
        fault = str(rng.choice(["kill", "interrupt", "disk"]))
        delay, disk_kib = float(rng.uniform(0.2, 2.5)), int(rng.integers(30, 160))
        folder = tmp_path / f"trial{trial}"
        with small_disk(folder, f"{disk_kib}k") as real:
            if fault == "disk" and not real:  # no mount here (not root): a kill instead, said in the name
                fault = "kill (no tmpfs)"
            sweep = folder / "s"
            cmd = sweep_cmd(POINTS, *SETTINGS, f"hydra.sweep.dir={sweep}")
            start = time.monotonic()
            code = faulted_run(cmd, fault, delay)
            seen[trial] = (fault, code, round(time.monotonic() - start, 1))
            if real:
                resize_tmpfs(folder, "16m")
            clean = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
            assert clean.returncode == 0, (trial, seen[trial], clean.stderr)
            check_complete(sweep, 6, 3)
    faults = {f for f, _, _ in seen.values()}
    assert {"kill", "interrupt"} <= {f.split()[0] for f in faults}, seen
    assert any(code != 0 for _, code, _ in seen.values()), f"no fault landed mid-sweep: {seen}"


# --- a native crash fails one point: an experiment registered here, whose child process dies by SIGSEGV ---------
@dataclass
class CrashConfig(Knobs):
    """Square n; the point with n == crash_at dies by SIGSEGV the first time it runs (a marker file)."""

    n: int = knob(1, "the value")
    crash_at: int = knob(2, "the point that crashes once")
    marker: str = knob("", "the file that says it crashed already")


def run_crash(cfg: CrashConfig, bench: BenchConfig, seed: int) -> list[VariantResult]:
    if cfg.n == cfg.crash_at and not os.path.exists(cfg.marker):
        open(cfg.marker, "w").close()
        faulthandler.disable()  # pytest's handler would print the child's stack into the test log
        os.kill(os.getpid(), signal.SIGSEGV)  # as llama.cpp's AMX kernels died: no Python exception, no row
    timing = bench.measure(lambda: cfg.n * cfg.n, time.perf_counter())
    return [VariantResult("square", {"square": cfg.n * cfg.n}, timings={"square": timing})]


CRASH = Experiment(name="crash", key="crash", schema=CrashConfig, run=run_crash, report=lambda: Report(("square",)),
                   columns=(Column("square", "", "n²"),), isolated=True)


@pytest.mark.usefixtures("hydra_restore_singletons")
def test_a_native_crash_fails_its_point_only_and_a_resume_completes_it(tmp_path):
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "crash.yaml").write_text("# @package _global_\ndefaults:\n  - /schema/crash@crash\n\nexperiment: crash\n")
    experiments = {**EXPERIMENTS, "crash": CRASH}
    register_schemas(experiments)
    sweep = tmp_path / "s"
    args = ["experiment=crash", "crash.n=1,2,3", f"crash.marker={tmp_path / 'crashed'}", *FAST_BENCH,
            "hydra.mode=MULTIRUN",  # as `run.py -m` sets it: each point keeps its job number
            f"hydra.searchpath=[file://{tmp_path / 'conf'}]"]
    with pytest.raises(SweepError, match=r"1 of 3 point\(s\) failed"):
        sweep_in_process(experiments, args, sweep)
    manifests = [json.loads((p / "point.json").read_text()) for p in sweep.iterdir() if p.is_dir()]
    status = {m["config"]["crash.n"]: m for m in manifests}
    assert status[2]["status"] == "failed" and "died: signal 11 (SIGSEGV)" in status[2]["errors"][0]
    assert status[1]["status"] == status[3]["status"] == "ok"
    assert not (sweep / ".sweep.lock").exists()
    sweep_in_process(experiments, args, sweep)  # resume: only the crashed point runs, and completes
    check_complete(sweep, 3, 1)
