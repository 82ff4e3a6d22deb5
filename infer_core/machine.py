"""What this machine can physically do: memory bandwidth, measured STREAM-style (GUIDE §5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from infer_core.timing import measure


def last_level_cache_bytes() -> int:
    """Size of the largest CPU cache (Linux sysfs); 32 MiB when it cannot be read."""
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip()
        unit = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        try:
            sizes.append(int(text.rstrip("KMG")) * unit)
        except ValueError:
            continue
    return max(sizes) if sizes else 32 * 2**20


def copy_bandwidth_gbps(n_bytes: int | None = None, repeats: int = 10) -> float:
    """Best-of-``repeats`` STREAM copy bandwidth in GB/s, counting read + write (16 B per float64).

    Arrays default to 4x the last-level cache (at least 128 MiB each), so the copy streams from
    memory, not from cache.
    """
    n_bytes = n_bytes or max(4 * last_level_cache_bytes(), 128 * 2**20)
    a = np.random.default_rng(0).standard_normal(n_bytes // 8)
    b = np.empty_like(a)
    t = measure(lambda: np.copyto(b, a), repeats=repeats, min_sample_s=0.0)
    return 2 * a.nbytes / float(np.min(t.per_call_s)) / 1e9
