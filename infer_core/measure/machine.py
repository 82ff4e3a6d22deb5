"""What this machine can physically do, measured once and cached.

Peak compute: the best sgemm and dgemm GFLOP/s over large square sizes (FLOPs = 2·n³).
Memory bandwidth: STREAM-style copy (``b = a``, 16 B per float64 element: read + write) and
triad (``a = b + s·c``, 24 B per element), plus a read-only pass (8 B per element), on arrays
at least 4x the last-level cache, best of >= 10, split over as many threads as BLAS uses.
NumPy runs the triad as two passes, so its figure (bytes counted as STREAM counts them)
understates the hardware. The roofline's memory roof is the better of copy and read-only.

The result is cached in a JSON file keyed by CPU model, core count, NumPy and BLAS versions,
BLAS thread count and the version of these kernels; :func:`reference` re-measures when the key
changes or when asked.
"""

from __future__ import annotations

import fcntl
import json
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from infer_core.measure.environment import blas_info, cpu_model, usable_cpus
from infer_core.measure.files import write_text_atomic
from infer_core.measure.timing import measure

GEMM_SIZES = (1024, 2048, 3072)
#: The version of the kernels below, part of a cached measurement's key: 2 reads with a BLAS dot product
#: (1 summed, which is compute-bound below the memory's speed).
KERNELS = 2


@dataclass(frozen=True)
class MachineRef:
    """Measured peaks of one machine at one BLAS thread count."""

    sgemm_gflops: float
    dgemm_gflops: float
    copy_gbps: float
    triad_gbps: float
    read_gbps: float
    gemm_sizes: tuple[int, ...]
    stream_bytes: int  # bytes of one STREAM array
    measured_utc: str

    def peak_gflops(self, dtype: str) -> float:
        """The GEMM peak for ``float32`` or ``float64``."""
        return self.sgemm_gflops if np.dtype(dtype) == np.float32 else self.dgemm_gflops

    @property
    def bandwidth_gbps(self) -> float:
        """The memory roof: the best of copy and read-only bandwidth."""
        return max(self.copy_gbps, self.read_gbps)


@dataclass(frozen=True)
class Roofline:
    """Attainable GFLOP/s for a kernel of given FLOPs and bytes (Williams et al., CACM 2009)."""

    attainable_gflops: float
    intensity: float  # FLOP per byte moved
    ridge_point: float  # intensity where the two roofs meet: peak / bandwidth
    bound: str  # "compute" or "bandwidth"


def roofline(flops: float, n_bytes: float, peak_gflops: float, bandwidth_gbps: float) -> Roofline:
    """``min(peak, intensity × bandwidth)`` with intensity = flops / bytes, and the ridge point."""
    if n_bytes <= 0 or peak_gflops <= 0 or bandwidth_gbps <= 0:
        raise ValueError(f"bytes={n_bytes}, peak={peak_gflops}, bandwidth={bandwidth_gbps} must all be > 0")
    intensity = flops / n_bytes
    ridge = peak_gflops / bandwidth_gbps
    memory_roof = intensity * bandwidth_gbps
    bound = "compute" if intensity >= ridge else "bandwidth"
    return Roofline(min(peak_gflops, memory_roof), intensity, ridge, bound)


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


def stream_bytes() -> int:
    """Bytes of one STREAM array: 4x the last-level cache, at least 128 MiB."""
    return max(4 * last_level_cache_bytes(), 128 * 2**20)


class StreamKernel:
    """A STREAM-style kernel over ``[0, n)``, split into ``threads`` contiguous parts run at once.

    Calling it runs the kernel once over the whole range; ``n_bytes`` is the traffic one call
    counts and ``arrays`` the arrays it streams over. NumPy releases the GIL inside each copy or
    reduction, so the parts stream in parallel, as the BLAS threads of a GEMV do. Use it as a
    context manager (it owns a thread pool when ``threads > 1``).
    """

    def __init__(
        self, kernel: Callable[[slice], object], n: int, threads: int, n_bytes: int, arrays: tuple[np.ndarray, ...]
    ) -> None:
        self.kernel, self.n_bytes, self.arrays = kernel, n_bytes, arrays
        self.parts = [slice(i * n // threads, (i + 1) * n // threads) for i in range(threads)]
        self._pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None

    def __call__(self) -> None:
        if self._pool is None:
            self.kernel(self.parts[0])
        else:
            list(self._pool.map(self.kernel, self.parts))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def __enter__(self) -> StreamKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def best_gbps(self, repeats: int) -> float:
        """Best GB/s over ``repeats`` calls."""
        t = measure(self, repeats=repeats, min_sample_s=0.0)
        return self.n_bytes / float(np.min(t.per_call_s)) / 1e9


def _threads(threads: int | None) -> int:
    return threads or max(1, int(blas_info()["blas_threads"]))


def copy_kernel(n_bytes: int | None = None, threads: int | None = None) -> StreamKernel:
    """STREAM copy ``b = a`` of float64 arrays of ``n_bytes`` (default :func:`stream_bytes`),
    counting read + write (16 B per element); ``threads`` defaults to the BLAS thread count."""
    a = np.full((n_bytes or stream_bytes()) // 8, 1.5)  # values do not change a copy's speed; filling is quick
    b = np.empty_like(a)
    return StreamKernel(lambda sl: np.copyto(b[sl], a[sl]), len(a), _threads(threads), 2 * a.nbytes, (a, b))


def copy_bandwidth_gbps(n_bytes: int | None = None, repeats: int = 10, threads: int | None = None) -> float:
    """Best STREAM copy ``b = a`` in GB/s, counting read + write (16 B per float64 element)."""
    with copy_kernel(n_bytes, threads) as copy:
        return copy.best_gbps(repeats)


def triad_bandwidth_gbps(n_bytes: int | None = None, repeats: int = 10, threads: int | None = None) -> float:
    """Best STREAM triad ``a = b + s·c`` in GB/s, counting 24 B per float64 element."""
    n = (n_bytes or stream_bytes()) // 8
    a, b, c = np.empty(n), np.full(n, 1.5), np.full(n, 0.5)

    def triad(sl: slice) -> None:
        np.multiply(c[sl], 3.0, out=a[sl])
        np.add(a[sl], b[sl], out=a[sl])

    with StreamKernel(triad, n, _threads(threads), 3 * a.nbytes, (a, b, c)) as kernel:
        return kernel.best_gbps(repeats)


def read_bandwidth_gbps(n_bytes: int | None = None, repeats: int = 10, threads: int | None = None) -> float:
    """Best read-only bandwidth in GB/s, 8 B per float64 element: the dot product of each part with itself
    (BLAS ddot, one BLAS thread per part), which streams at the memory's speed. NumPy's pairwise sum does not:
    measured on 2 threads, sum 23 GB/s, ddot 30.

    Kernels that mostly read, such as a GEMV streaming its weights, avoid the write-allocate
    traffic a copy pays, so they can run faster than the copy figure.
    """
    a = np.full((n_bytes or stream_bytes()) // 8, 0.5)
    parts = _threads(threads)
    with (threadpool_limits(1, user_api="blas"),
          StreamKernel(lambda sl: np.dot(a[sl], a[sl]), len(a), parts, a.nbytes, (a,)) as kernel):
        return kernel.best_gbps(repeats)


def gemm_gflops(n: int, dtype: str, repeats: int = 5) -> float:
    """Best GFLOP/s of an n×n×n GEMM (2·n³ FLOPs) into a preallocated output."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    c = np.empty((n, n), dtype=dtype)
    t = measure(lambda: np.matmul(a, b, out=c), repeats=repeats, min_sample_s=0.0)
    return 2 * n**3 / float(np.min(t.per_call_s)) / 1e9


def measurement_steps(gemm_sizes: tuple[int, ...] = GEMM_SIZES) -> int:
    """How many measurements :func:`measure_machine` takes (for a progress bar)."""
    return 2 * len(gemm_sizes) + 3


def measure_machine(gemm_sizes: tuple[int, ...] = GEMM_SIZES, n_bytes: int | None = None,
                    step: Callable[[str], None] | None = None) -> MachineRef:
    """Measure peaks and bandwidths at the BLAS thread count now in force; ``step(name)`` is called after each of
    the :func:`measurement_steps` measurements."""
    n_bytes = n_bytes or stream_bytes()

    def done(name: str, value: float) -> float:
        if step is not None:
            step(name)
        return value

    sgemm = max(done(f"sgemm {n}", gemm_gflops(n, "float32")) for n in gemm_sizes)
    dgemm = max(done(f"dgemm {n}", gemm_gflops(n, "float64")) for n in gemm_sizes)
    return MachineRef(
        sgemm_gflops=sgemm,
        dgemm_gflops=dgemm,
        copy_gbps=done("copy", copy_bandwidth_gbps(n_bytes)),
        triad_gbps=done("triad", triad_bandwidth_gbps(n_bytes)),
        read_gbps=done("read", read_bandwidth_gbps(n_bytes)),
        gemm_sizes=tuple(gemm_sizes),
        stream_bytes=n_bytes,
        measured_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def machine_key() -> dict[str, str | int]:
    """What a cached measurement is valid for: CPU, cores, NumPy, BLAS and its threads now, these kernels."""
    blas = blas_info()
    return {"cpu": cpu_model(), "n_cpus": usable_cpus(), "numpy": np.__version__, "blas": str(blas["blas"]),
            "blas_threads": int(blas["blas_threads"]), "kernels": KERNELS}


#: The marker of a machine reference file this project wrote: only such a file is ever rewritten.
WRITTEN_BY = "infer-sweep machine reference"


class MachineFileError(ValueError):
    """A file that is not a machine reference this library wrote: it is never overwritten."""


def reference(
    path: str | Path,
    force: bool = False,
    measure_fn: Callable[[], MachineRef] = measure_machine,
) -> tuple[MachineRef, bool]:
    """The machine reference for the current key: from the cache file ``path``, else measured and stored there.

    Returns ``(reference, measured_now)``. Entries for other keys (thread counts, ...) are kept. A file
    that is not a machine reference raises :class:`MachineFileError` before anything is measured; an
    entry that cannot be read is reported (a warning naming the file and the entry) and replaced only
    if it has the current key.
    """
    path, key = Path(path), machine_key()
    cached = None if force else _cached(path, key)
    if cached is not None:
        return cached, False
    with _measuring(path):  # jobs started together measure once: the others wait, then read the file
        cached = None if force else _cached(path, key)
        if cached is not None:
            return cached, False
        ref = measure_fn()
        entries = [e for e in _entries(path)[0] if e.get("key") != key] + [{"key": key, "ref": asdict(ref)}]
        write_text_atomic(path, json.dumps({"written_by": WRITTEN_BY, "entries": entries}, indent=2) + "\n")
    return ref, True


def _cached(path: Path, key: dict) -> MachineRef | None:
    for entry in cached_entries(path):
        if entry["key"] == key:
            return MachineRef(**{**entry["ref"], "gemm_sizes": tuple(entry["ref"]["gemm_sizes"])})
    return None


@contextmanager
def _measuring(path: Path) -> Iterator[None]:
    """An exclusive lock on ``<path>.lock`` while the reference is measured (two measurements at once would each
    see half the machine)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_entries(path: str | Path) -> list[dict]:
    """Every readable cached measurement (key and reference); unreadable ones are reported as warnings."""
    entries, problems = _entries(Path(path))
    for problem in problems:
        warnings.warn(f"{path}: {problem}", stacklevel=2)
    return [e for e in entries if _readable(e) is None]


def _entries(path: Path) -> tuple[list[dict], list[str]]:
    """The entries of the file (all of them, readable or not, to keep on rewrite) and what is wrong with each."""
    if not path.exists():
        return [], []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MachineFileError(f"{path} is not a machine reference ({type(exc).__name__}: {exc}); it is left as "
                               "it is: name another file (bench.machine_file=...) or remove it") from None
    if not _ours(data):
        raise MachineFileError(f"{path} is JSON but not a machine reference written by infer-sweep; it is left as "
                               "it is: name another file (bench.machine_file=...) or remove it")
    entries = [e for e in data["entries"] if isinstance(e, dict)]
    problems = [f"entry {i} ignored: {why}" for i, e in enumerate(data["entries"])
                if (why := _readable(e) if isinstance(e, dict) else "not an object")]
    return entries, problems


def _ours(data: object) -> bool:
    """A file this project wrote: it carries our marker, or (earlier versions) it is exactly ``{"entries": [...]}``
    with every entry a ``{"key": {...}, "ref": {...}}`` object."""
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        return False
    if data.get("written_by") == WRITTEN_BY:
        return True
    return set(data) == {"entries"} and all(
        isinstance(e, dict) and set(e) == {"key", "ref"} and isinstance(e["key"], dict) and isinstance(e["ref"], dict)
        for e in data["entries"])


def _readable(entry: dict) -> str | None:
    """Why an entry cannot be used, or None."""
    if not isinstance(entry.get("key"), dict) or not isinstance(entry.get("ref"), dict):
        return "it lacks a 'key' or a 'ref' object"
    fields = {f.name for f in dataclass_fields(MachineRef)}
    missing = fields - set(entry["ref"])
    return f"its reference lacks {', '.join(sorted(missing))} (another version?)" if missing else None
