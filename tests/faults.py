"""What the fault tests share: a real small file system where the test can mount one, sweeps run as a user
runs them, and the check that a sweep folder holds every point complete exactly once."""

from __future__ import annotations

import contextlib
import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT

TINY_KV = ["kv.d_model=8", "kv.n_heads=2", "bench.repeats=5", "bench.min_sample_s=0.0005", "bench.threads=1"]


def mount_tmpfs(path: Path, size: str) -> bool:
    """Mount a tmpfs of ``size`` at ``path`` (root only); False where the test cannot make one."""
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def resize_tmpfs(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True, capture_output=True)


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[bool]:
    """A real small file system at ``path`` for the block, if this process may mount one."""
    mounted = mount_tmpfs(path, size)
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def sweep_cmd(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "experiments" / "run.py"), "-m", *args]


def check_complete(sweep: Path, points: int, rows_per_point: int) -> None:
    """Every point complete exactly once: a manifest saying ok, every listed file present and parsable,
    one row per variant, no duplicate row, no temporary file left."""
    folders = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(folders) == points, [f.name for f in folders]
    assert not list(sweep.rglob(".*.tmp*")), "a temporary file was left behind"
    seen = set()
    for folder in folders:
        manifest = json.loads((folder / "point.json").read_text())
        assert manifest["status"] == "ok", (folder, manifest)
        for name in manifest["files"]:
            rows = list(csv.DictReader(open(folder / name, newline="")))
            assert rows and all(None not in r and None not in r.values() for r in rows), (folder, name)
        rows = list(csv.DictReader(open(folder / "results.csv", newline="")))
        assert len(rows) == rows_per_point and {r["status"] for r in rows} == {"ok"}
        for r in rows:
            key = (r["overrides"], r["variant"])
            assert key not in seen, f"duplicate row {key}"
            seen.add(key)
    jobs = [json.loads((f / "point.json").read_text())["job_num"] for f in folders]
    assert sorted(jobs) == list(range(points)), "every point keeps its own job number"
