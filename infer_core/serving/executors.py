"""What a scheduler iteration costs: run for real (:class:`NumpyExecutor`) or predicted (:class:`CostModel`).

The real executor feeds every request seeded token embeddings (``default_rng([seed, request id])``, one row
per position: teacher-forced, so a request's outputs do not depend on the batch it ran in), runs the prefill
pieces and one batched decode step over the paged cache, and keeps the outputs of the requests it checks:
:meth:`NumpyExecutor.check` compares them with one full causal pass over the same tokens, whatever batching,
swapping or recomputation happened in between.
"""

from __future__ import annotations

import time

import numpy as np

from infer_core.decoder.model import Decoder, forward
from infer_core.measure.timing import TimeBudgetExceeded
from infer_core.serving.paged import PagedKVCache, Swapped, paged_decode_step, paged_forward
from infer_core.serving.scheduler import Iteration, Request, WallClock


class NumpyExecutor(WallClock):
    """Runs iterations with ``model`` over ``cache`` on the wall clock; checks the requests in ``check``."""

    def __init__(self, model: Decoder, cache: PagedKVCache, seed: int, check: frozenset[int] = frozenset(),
                 deadline: float | None = None) -> None:
        super().__init__()
        self.model, self.cache, self.seed, self.checked = model, cache, seed, check
        self.deadline = deadline  # time.perf_counter() past which an iteration is refused (a time budget)
        self.inputs: dict[int, np.ndarray] = {}
        self.outputs: dict[int, dict[int, np.ndarray]] = {i: {} for i in check}

    def tokens(self, r: Request) -> np.ndarray:
        """The request's input embeddings, (prompt + output, d_model): the same on every call."""
        rng = np.random.default_rng([self.seed, r.id])
        return rng.standard_normal((r.prompt + r.output, self.model.shape.d_model), dtype=np.float32)

    def start(self, r: Request) -> None:
        self.inputs[r.id] = self.tokens(r)

    def finish(self, r: Request) -> None:
        self.inputs.pop(r.id, None)

    def swap_out(self, r: Request) -> Swapped:
        return self.cache.copy_out(r.id)

    def swap_in(self, r: Request) -> None:
        self.cache.copy_in(r.id, r.swapped)

    def run(self, it: Iteration) -> None:
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise TimeBudgetExceeded(f"{self.clock():.0f} s into the trace")
        for r, s, t in it.prefill:
            h = paged_forward(self.model, self.inputs[r.id][s:s + t], self.cache, r.id, start=s)
            if r.id in self.checked and s + t == r.target:
                self.outputs[r.id][r.generated] = h[-1].copy()
        if it.decode:
            ids = [r.id for r in it.decode]
            # a padding row (a finished request in a static batch) feeds its last token again
            x = np.stack([self.inputs[r.id][min(self.cache.lengths[r.id], len(self.inputs[r.id])) - 1]
                          for r in it.decode])
            h = paged_decode_step(self.model, x, self.cache, ids)
            for i, r in enumerate(it.decode):
                if r.id in self.checked and r.finish is None:  # not a finished request's padding row
                    self.outputs[r.id][r.generated] = h[i].copy()

    def check(self, reqs: list[Request]) -> float:
        """Max |output − full causal pass| / max |full pass| over every token of the checked requests."""
        worst = 0.0
        for r in reqs:
            if r.id not in self.checked:
                continue
            got = self.outputs[r.id]
            if sorted(got) != list(range(r.output)):
                raise RuntimeError(f"request {r.id}: outputs for tokens {sorted(got)}, want 0 … {r.output - 1}")
            ref = forward(self.model, self.tokens(r)[None, :r.prompt + r.output - 1])[0, r.prompt - 1:]
            worst = max(worst, float(np.abs(np.stack([got[i] for i in range(r.output)]) - ref).max()
                                     / np.abs(ref).max()))
        return worst


class CostModel:
    """A per-iteration time linear in the iteration's features, fitted by least squares on measured iterations;
    as an executor it runs the same schedule on a virtual clock."""

    def __init__(self, coef: np.ndarray) -> None:
        self.coef, self.now = np.asarray(coef, dtype=np.float64), 0.0

    @classmethod
    def fit(cls, steps: list[tuple[np.ndarray, float]]) -> CostModel:
        """Least squares on (features, seconds) pairs; features that never varied get no weight."""
        x = np.stack([f for f, _ in steps])
        y = np.array([s for _, s in steps])
        used = np.flatnonzero((x != 0).any(axis=0))
        coef = np.zeros(x.shape[1])
        coef[used] = np.linalg.lstsq(x[:, used], y, rcond=None)[0]
        return cls(coef)

    def predict(self, features: np.ndarray) -> float:
        return max(float(features @ self.coef), 0.0)

    def clock(self) -> float:
        return self.now

    def wait_until(self, when: float) -> None:
        self.now = max(self.now, when)

    def run(self, it: Iteration) -> None:
        self.now += self.predict(it.features())  # the whole iteration's cost, scheduling included (as fitted)

    def start(self, r: Request) -> None:
        pass

    def finish(self, r: Request) -> None:
        pass

    def swap_out(self, r: Request) -> bool:
        return True  # nothing to copy: only the schedule is modeled

    def swap_in(self, r: Request) -> None:
        pass
