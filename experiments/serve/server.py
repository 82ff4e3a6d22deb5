"""The embedded server on 127.0.0.1: llama.cpp's own ``llama-server`` (built by ``make tools``), or
llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``).

:class:`EmbeddedServer` is a context manager: it starts the server on a free port in its own process
group, waits until it answers, and on leaving (normally, on an exception, on Ctrl-C) stops the whole
group, SIGTERM then SIGKILL, and reaps it. Should this process die without cleaning up (SIGKILL), the
kernel kills the server too (``PR_SET_PDEATHSIG``, set before the server's program starts): no orphan
survives.

``llama-server`` runs ``parallel`` slots with continuous batching, each slot with ``n_ctx`` tokens of its
own (``-c`` is ``parallel × n_ctx`` with the KV buffer not unified: each slot gets its share of ``-c``),
and its Prometheus ``/metrics``. llama-cpp-python's server runs with ``--interrupt_requests False`` (by
default it cuts a streaming answer short as soon as another request waits); it serves one request at a
time, others queue.
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
from experiments.serve.schema import KEY, ServeConfig, Server
from experiments.shared import llama_tools

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_DEATH_SIGNAL = ("import contextlib, ctypes, os, runpy, sys\n"
                 "with contextlib.suppress(OSError, AttributeError):\n"
                 f"    ctypes.CDLL('libc.so.6').prctl({PR_SET_PDEATHSIG}, {int(signal.SIGKILL)})\n")
#: Runs the server module after asking the kernel to SIGKILL it when its parent dies (Linux; elsewhere a
#: no-op). Done in the child itself rather than in a ``preexec_fn``, which is unsafe in a threaded parent.
LAUNCH = (_DEATH_SIGNAL + "sys.argv[0] = 'llama_cpp.server'\n"
          "runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n")
#: The same for a program: the death signal survives ``execv``, so it holds for the program that replaces us.
EXEC = _DEATH_SIGNAL + "os.execv(sys.argv[1], sys.argv[1:])\n"


class EmbeddedServer:
    """llama.cpp's server on ``model`` (a GGUF file), named ``alias`` in its answers: ``llama-server`` at the path
    ``binary`` with ``parallel`` slots of ``n_ctx`` tokens each, or llama-cpp-python's when ``binary`` is None."""

    def __init__(self, model: Path, alias: str, n_ctx: int, threads: int, startup_timeout_s: float,
                 binary: Path | None = None, parallel: int = 1) -> None:
        self.model, self.alias, self.n_ctx, self.threads = model, alias, n_ctx, threads
        self.startup_timeout_s, self.binary, self.parallel = startup_timeout_s, binary, parallel
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_file = tempfile.TemporaryFile(mode="w+b")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return "llama-server" if self.binary is not None else "llama-cpp-python"

    @property
    def arguments(self) -> list[str]:
        """The server's own command line, after its program."""
        if self.binary is None:
            return ["--model", str(self.model), "--model_alias", self.alias, "--host", "127.0.0.1", "--port",
                    str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads),
                    "--n_threads_batch", str(self.threads), "--interrupt_requests", "False"]
        return ["-m", str(self.model), "-a", self.alias, "--host", "127.0.0.1", "--port", str(self.port),
                "-c", str(self.parallel * self.n_ctx), "-np", str(self.parallel), "--no-kv-unified",
                "--cont-batching", "-t", str(self.threads), "-tb", str(self.threads), "--metrics", "--no-webui"]

    @property
    def command(self) -> list[str]:
        if self.binary is None:
            return [sys.executable, "-c", LAUNCH, *self.arguments]
        return [sys.executable, "-c", EXEC, str(self.binary), *self.arguments]

    @property
    def health_path(self) -> str:
        return "/health" if self.binary is not None else "/v1/models"

    def __enter__(self) -> EmbeddedServer:
        self.port = free_port()
        log.info("starting the embedded server: %s %s", self.binary or "python -m llama_cpp.server",
                 " ".join(self.arguments))
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
                with urllib.request.urlopen(self.url + self.health_path, timeout=2) as resp:
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


def server_binary(cfg: ServeConfig) -> Path | None:
    """The ``llama-server`` the embedded server runs, or None for llama-cpp-python's (asked for, or the fallback
    when the tools are not built, said in one line)."""
    if cfg.server is Server.llama_cpp_python:
        return None
    try:
        return llama_tools.tool("llama-server")
    except llama_tools.ToolsMissing as exc:
        if cfg.parallel > 1:
            raise ConfigError(f"{KEY}.parallel={cfg.parallel} needs llama-server: {exc}") from None
        log.warning("%s; %s.server=llama_server falls back to llama-cpp-python's server (one request at a time)",
                    exc, KEY)
        return None
