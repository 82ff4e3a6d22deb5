"""What a person waiting sees: a step that takes more than a few seconds says what it does before it starts,
and a long loop shows a progress bar (tqdm, on a terminal; a log gets the announcement and the result)."""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm import tqdm

from infer_core.measure.environment import blas_info
from infer_core.measure.machine import GEMM_SIZES, MachineRef, measure_machine, measurement_steps, reference

log = logging.getLogger(__name__)


def bar(total: float, desc: str, **kwargs: object) -> tqdm:
    """A progress bar on stderr, shown only on a terminal (``disable=None``), gone when done."""
    return tqdm(total=total, desc=desc, disable=None, leave=False, dynamic_ncols=True, **kwargs)


def machine_reference(path: str | Path, force: bool = False, gemm_sizes: tuple[int, ...] = GEMM_SIZES,
                      n_bytes: int | None = None) -> tuple[MachineRef, bool]:
    """The cached machine reference (:func:`infer_core.measure.machine.reference`); measuring one is announced first,
    with a bar over its measurements."""

    def measure() -> MachineRef:
        log.info("measuring this machine at %s BLAS thread(s), once: sgemm and dgemm peaks (n = %s), copy, triad "
                 "and read bandwidth; about a minute, cached in %s", blas_info()["blas_threads"],
                 ", ".join(map(str, gemm_sizes)), path)
        with bar(measurement_steps(gemm_sizes), "machine reference", unit="step") as b:
            def step(name: str) -> None:
                b.set_postfix_str(name)
                b.update()

            return measure_machine(gemm_sizes, n_bytes, step)

    return reference(path, force=force, measure_fn=measure)
