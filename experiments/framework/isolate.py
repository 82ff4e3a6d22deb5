"""Run an experiment's measurement in a child process of its point, so that a native library dying by a signal
(llama.cpp's segfault) fails this point alone, with a row that names the signal, and the sweep goes on.

The child is forked: it inherits the point's BLAS thread limit, its logging and its imports, and sends its
results (or its exception) back through a pipe. Nothing else changes for the experiment.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import traceback
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
STOP_WAIT_S = 20.0  # how long a child interrupted with its point may take to clean up


class ChildDied(RuntimeError):
    """The point's child process ended without sending its results (a signal, or an exit)."""


def exit_reason(code: int | None) -> str:
    """A process's end in words: ``signal 11 (SIGSEGV)`` for a negative exit code, else ``exit code N``."""
    if code is not None and code < 0:
        try:
            return f"signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def run_isolated(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` computed in a forked child; its exception is raised here as it was raised there."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(send, os.getpid(), fn, args), daemon=True)
    child.start()
    send.close()
    try:
        kind, value = receive.recv()  # before join: a large answer would otherwise block the child's write
    except EOFError:
        kind, value = None, None
    except BaseException:  # Ctrl-C in the point: the child stops too, cleaning up (its server) if it can
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGINT)
        child.join(STOP_WAIT_S)
        child.kill()
        child.join()
        raise
    finally:
        receive.close()
    child.join()
    if kind is None:
        raise ChildDied(f"the point's process died: {exit_reason(child.exitcode)} (a crash in native code; "
                        "the other points go on)")
    if kind == "error":
        raise value
    return value


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; elsewhere nothing): a point killed
    by SIGKILL leaves no orphan computing on."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _child(send: Any, parent: int, fn: Callable[..., Any], args: tuple) -> None:
    _die_with_parent(parent)
    try:
        answer: tuple[str, Any] = ("ok", fn(*args))
    except BaseException as exc:
        from experiments.framework.spec import ConfigError

        if not isinstance(exc, ConfigError):
            log.error("in the point's child process:\n%s", traceback.format_exc())
        try:
            pickle.dumps(exc)
        except Exception:  # an exception that cannot travel goes as its text
            exc = RuntimeError(f"{type(exc).__name__}: {' '.join(str(exc).split())}")
        answer = ("error", exc)
    try:
        send.send(answer)
    finally:
        send.close()
        logging.shutdown()
        os._exit(0)  # no atexit hooks or finalizers of the parent's objects run twice
