"""llama.cpp's own programs: ``llama-server``, ``llama-bench``, ``llama-perplexity`` and ``llama-batched-bench``,
built once per llama-cpp-python version from that version's sdist (its ``vendor/llama.cpp`` is the llama.cpp the
engine runs; ``make tools``, :mod:`experiments.shared.tools_build`), in ``<cache>/tools/llama.cpp-<version>/bin``,
outside any repository: where they are, whether they may run here, and how to run one whose output may be cut.
Without the tools the rest of the project works: what needs one says, in one line, the command that builds it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from experiments.shared.llama_build import EngineBuildError, cpu_flags
from experiments.shared.packaged import cache_dir

TOOLS = ("llama-server", "llama-bench", "llama-perplexity", "llama-batched-bench")
PACKAGE = "llama-cpp-python"
BUILD_COMMAND = "make tools"


class ToolsMissing(RuntimeError):
    """A llama.cpp tool is not built (or its build failed); the message names the command that builds it."""


def engine_version() -> str:
    """The installed llama-cpp-python's version: the tools are built from the same llama.cpp."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        raise ToolsMissing(f"{PACKAGE} is not installed: the tools are built from its sdist; run `make test` or "
                           "`pip install -e '.[engine]'` first") from None


def tools_dir(version: str | None = None) -> Path:
    """Where the tools of ``version`` (default: the installed engine's) live once built."""
    return cache_dir() / "tools" / f"llama.cpp-{version or engine_version()}"


def built(version: str | None = None) -> dict | None:
    """The build record (``build.json``) when every tool of ``version`` is built, else None."""
    folder = tools_dir(version)
    record = folder / "build.json"
    if not record.is_file() or not all((folder / "bin" / t).is_file() for t in TOOLS):
        return None
    return json.loads(record.read_text())


def tool(name: str, version: str | None = None) -> Path:
    """The path of the built tool ``name``; refused in one line (the command that builds it) when missing, or
    when it was built with AMX kernels on a CPU that has AMX."""
    if name not in TOOLS:
        raise ValueError(f"{name} is not one of the llama.cpp tools built here: {', '.join(TOOLS)}")
    try:
        record = built(version)
    except ToolsMissing as exc:
        raise ToolsMissing(f"{name} is not built: {exc}") from None
    if record is None:
        raise ToolsMissing(f"{name} is not built: run `{BUILD_COMMAND}` (builds llama.cpp's tools from the "
                           f"{PACKAGE} sdist, about 8 to 12 minutes on 2 cores, once)")
    path = tools_dir(version) / "bin" / name
    if has_amx_kernels(path) and "amx_int8" in cpu_flags():
        raise EngineBuildError(f"{name} was built with llama.cpp's AMX kernels, which crash on this CPU (it has AMX): "
                               f"remove {tools_dir(version)} and run `{BUILD_COMMAND}`")
    return path


#: A symbol only a build with AMX kernels has (ggml-cpu/amx/amx.cpp, under ``__AMX_INT8__``).
AMX_SYMBOL = b"ggml_backend_amx_buffer_type\x00"


def has_amx_kernels(binary: Path) -> bool:
    """Whether the (static, unstripped) binary carries llama.cpp's AMX kernels."""
    return AMX_SYMBOL in binary.read_bytes()


def available(version: str | None = None) -> bool:
    """Whether every tool is built (and may run here)."""
    try:
        tool(TOOLS[0], version)
    except (ToolsMissing, EngineBuildError):
        return False
    return True


#: Runs of a tool before its output is taken as it is: llama-batched-bench and llama-perplexity print through
#: llama.cpp's asynchronous logger, which can exit before writing its last lines (llama.cpp issue 22142; seen here on
#: a busy machine: exit code 0 and llama-batched-bench's last row missing, in 3 of 12 runs).
ATTEMPTS = 3


def run_tool(cmd: list[str], complete: Callable[[str], bool], timeout_s: float) -> subprocess.CompletedProcess:
    """Run a tool's command; run it again (``ATTEMPTS`` runs at most) while it succeeds but its output (stdout and
    stderr) is not ``complete``. The last run is returned: the caller judges its exit code and output."""
    for _ in range(ATTEMPTS):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0 or complete(proc.stdout + proc.stderr):
            break
    return proc
