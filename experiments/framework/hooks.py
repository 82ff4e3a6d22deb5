"""What the ``infer`` sweeper asks of an app, and how an app hands it over: an explicit registration, not an
attribute that an app could forget without anything saying so."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from omegaconf import DictConfig

if TYPE_CHECKING:
    from experiments.framework.job import JobInfo, PointOutcome


class SweepHooks(Protocol):
    """What the sweeper asks of an app (:class:`~experiments.framework.point.PointApp` is one)."""

    def check(self, cfg: DictConfig, folder: Path) -> str | None: ...

    def completed(self, job: JobInfo) -> PointOutcome | None: ...

    def passes_done(self, job: JobInfo) -> int: ...

    def record_invalid(self, job: JobInfo, cfg: DictConfig | None, error: str) -> PointOutcome: ...


#: The hooks each app registered, by its task function (see :func:`register`).
_HOOKS: weakref.WeakKeyDictionary[Callable, SweepHooks] = weakref.WeakKeyDictionary()


def register(task_function: Callable, hooks: SweepHooks) -> None:
    """Give the ``infer`` sweeper an app's hooks: checks before running, resume, outcomes. Without them a sweep
    runs as Hydra's basic sweeper does, and says so. A function ``@hydra.main`` wrapped is registered as Hydra
    hands it to the sweeper (the function it wraps)."""
    for fn in (task_function, getattr(task_function, "__wrapped__", None)):
        if fn is not None:
            _HOOKS[fn] = hooks


def hooks_of(task_function: Callable) -> SweepHooks | None:
    """The hooks registered for ``task_function``, or None."""
    return _HOOKS.get(task_function)
