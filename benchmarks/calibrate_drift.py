"""Calibrate the drift model from this machine: read the drift canary again and again, fit the model, write it.

    python benchmarks/calibrate_drift.py [--minutes 5] [--every 0.25] [--out tests/fixtures/drift_model.json]

Each reading is the canary a sweep takes before each pass (infer_core/measure/canary.py: a 64 MiB copy and a
512×512 sgemm, about 50 ms). The log of each speed over time is fitted by infer_core/measure/drift.py (stretches
of seconds at levels of their own, plus each reading's noise). The fixture holds the model of each series and
what it was fitted from; the verdict tests (tests/test_verdicts.py) draw synthetic sweeps from the worse of the
two. The series itself goes to outputs/drift/. Run it on an otherwise idle checkout: it measures the machine's own
drift, not yours.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infer_core.measure.canary import read_canary
from infer_core.measure.drift import fit_drift
from infer_core.measure.environment import cpu_model, usable_cpus
from infer_core.measure.files import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]


def record(minutes: float, every: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seconds since the start, copy GB/s and sgemm GFLOP/s of each reading."""
    start, rows = time.perf_counter(), []
    while (now := time.perf_counter() - start) < minutes * 60:
        r = read_canary()
        rows.append((now, r.copy_gbps, r.sgemm_gflops))
        time.sleep(max(0.0, every - (time.perf_counter() - start - now)))
    return tuple(np.array(col) for col in zip(*rows, strict=True))  # type: ignore[return-value]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--every", type=float, default=0.25, help="seconds between readings")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "drift_model.json")
    args = parser.parse_args()
    print(f"reading the canary every {args.every:g} s for {args.minutes:g} min on {cpu_model()} "
          f"({usable_cpus()} CPUs)", flush=True)
    t, copy, sgemm = record(args.minutes, args.every)
    series = ROOT / "outputs" / "drift" / f"canary-{datetime.now(timezone.utc):%Y-%m-%d_%H-%M-%S}.csv"
    series.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(series, np.stack([t, copy, sgemm], 1), delimiter=",", header="seconds,copy_gbps,sgemm_gflops",
               comments="")
    models = {}
    for name, speed in (("copy", copy), ("sgemm", sgemm)):
        model = fit_drift(t, np.log(speed))
        spread = float(np.std(np.log(speed)))
        models[name] = {**asdict(model), "median": float(np.median(speed)), "log_sd": spread}
        print(f"{name}: median {np.median(speed):.1f}, log sd {spread:.3f}; stretches of {model.stretch_s:.1f} s "
              f"at levels spread by {model.level_sd:.3f}, reading noise {model.noise_sd:.3f}")
    write_text_atomic(args.out, json.dumps({
        "cpu": cpu_model(), "cpus": usable_cpus(), "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "readings": len(t), "minutes": args.minutes, "every_s": args.every, "models": models}, indent=2) + "\n")
    print(f"wrote {args.out} (series in {series})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
