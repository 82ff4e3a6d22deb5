"""Random faults never lose or fake a point: 10 seeded trials of a 6-point sweep, each hit by a SIGKILL,
a SIGINT or a full disk at a random moment, then rerun cleanly; afterwards every point is complete
exactly once, with no duplicate row and no partial file."""

from __future__ import annotations

import signal
import subprocess
import time

import numpy as np

from tests.conftest import ROOT
from tests.faults import check_complete, resize_tmpfs, small_disk, sweep_cmd

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
