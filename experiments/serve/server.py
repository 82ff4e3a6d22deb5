"""The embedded server: llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``) on 127.0.0.1.

:class:`EmbeddedServer` is a context manager: it starts the server on a free port in its own process
group, waits until ``/v1/models`` answers, and on leaving (normally, on an exception, on Ctrl-C)
stops the whole group, SIGTERM then SIGKILL, and reaps it. Should this process die without
cleaning up (SIGKILL), the kernel kills the server too (``PR_SET_PDEATHSIG``): no orphan survives.

It runs with ``--interrupt_requests False``: by default llama-cpp-python cuts a streaming answer short
as soon as another request waits. It serves one request at a time; others queue, as they would.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from experiments.framework.isolate import exit_reason
from experiments.framework.spec import ConfigError

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: Runs the server module after asking the kernel to SIGKILL it when its parent dies (Linux; elsewhere a
#: no-op). Done in the child itself rather than in a ``preexec_fn``, which is unsafe in a threaded parent.
LAUNCH = ("import contextlib, ctypes, runpy, sys\n"
          "with contextlib.suppress(OSError, AttributeError):\n"
          f"    ctypes.CDLL('libc.so.6').prctl({PR_SET_PDEATHSIG}, {int(signal.SIGKILL)})\n"
          "sys.argv[0] = 'llama_cpp.server'\n"
          "runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n")


class EmbeddedServer:
    """llama.cpp's server on ``model`` (a GGUF file), named ``alias`` in its answers."""

    def __init__(self, model: Path, alias: str, n_ctx: int, threads: int, startup_timeout_s: float) -> None:
        self.model, self.alias, self.n_ctx, self.threads = model, alias, n_ctx, threads
        self.startup_timeout_s = startup_timeout_s
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_file = tempfile.TemporaryFile(mode="w+b")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-c", LAUNCH, "--model", str(self.model), "--model_alias", self.alias,
                "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
                "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads),
                "--interrupt_requests", "False"]

    def __enter__(self) -> EmbeddedServer:
        self.port = free_port()
        log.info("starting the embedded server: python -m llama_cpp.server %s", " ".join(self.command[3:]))
        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def exit_code(self) -> int | None:
        """None while the server runs, else its exit code (negative: the signal that ended it)."""
        return None if self.proc is None else self.proc.poll()

    def died(self, wait_s: float = 1.0) -> str | None:
        """How the server ended, in words ("the embedded server crashed: signal 11 (SIGSEGV)"), waiting up to
        ``wait_s`` for a dying one to be reaped; None while it runs."""
        if self.proc is None:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(wait_s)
        code = self.proc.poll()
        if code is None:
            return None
        if code < 0:
            return f"the embedded server crashed: {exit_reason(code)}"
        return f"the embedded server exited with code {code}"

    def tail(self, lines: int = 3) -> str:
        """The last lines of the server's output, on one line."""
        if self.log_file.closed:
            return ""
        self.log_file.flush()
        self.log_file.seek(0)
        text = self.log_file.read().decode(errors="replace").strip().splitlines()
        return " | ".join(line.strip() for line in text[-lines:])

    def _wait_healthy(self) -> None:
        started = time.perf_counter()
        while time.perf_counter() - started < self.startup_timeout_s:
            if self.exit_code() is not None:
                raise RuntimeError(f"{self.died()} while starting: {self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v1/models", timeout=2) as resp:
                    if resp.status == 200:
                        log.info("embedded server ready on %s after %.1f s (pid %d)", self.url,
                                 time.perf_counter() - started, self.proc.pid if self.proc else -1)
                        return
            except OSError:
                time.sleep(0.1)
        raise ConfigError(f"the embedded server did not answer within serve.startup_timeout_s="
                          f"{self.startup_timeout_s:g} s: {self.tail()}")

    def stop(self) -> None:
        """Stop the server's process group and reap it (idempotent)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
                if proc.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(wait)
            proc.wait()
            with contextlib.suppress(ProcessLookupError):  # anything it left in its group
                os.killpg(proc.pid, signal.SIGKILL)
        if not self.log_file.closed:
            self.log_file.close()
