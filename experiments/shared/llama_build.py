"""Whether the installed llama.cpp may run on this machine: a build with llama.cpp's AMX kernels crashes on a CPU
that has AMX (llama.cpp issue 20824), so it is refused, in one line with the command that rebuilds it, before any
experiment calls it (the engine's own calls, the embedded server's)."""

from __future__ import annotations

from pathlib import Path

#: ggml's type ids of llama.cpp's KV-cache element types (``enum ggml_type``), for every experiment that sets them.
CACHE_TYPE_IDS = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8}

#: How to rebuild llama-cpp-python without llama.cpp's AMX kernels (the Makefile builds it so).
REBUILD = ('pip cache remove llama_cpp_python; CMAKE_ARGS="-DCMAKE_C_FLAGS=-mno-amx-int8 '
           '-DCMAKE_CXX_FLAGS=-mno-amx-int8" pip install --force-reinstall --no-deps llama-cpp-python=={version}')


class EngineBuildError(RuntimeError):
    """The installed llama.cpp would crash on this machine; the message gives the command that fixes it."""


def amx_problem(system_info: str, cpu_flags: set[str], version: str) -> str | None:
    """Why this llama.cpp build must not run here: built with AMX kernels (``AMX_INT8 = 1``) on a CPU that has
    AMX, where they crash (llama.cpp issue 20824); None when it may run."""
    if "AMX_INT8 = 1" in system_info and "amx_int8" in cpu_flags:
        return ("llama-cpp-python was built with llama.cpp's AMX kernels, which crash on this CPU (it has AMX): "
                "rebuild it without them: " + REBUILD.format(version=version))
    return None


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def check_build() -> None:
    """Refuse, in one line, a llama.cpp build that would crash on this CPU, before anything calls it."""
    import llama_cpp

    problem = amx_problem(llama_cpp.llama_print_system_info().decode(errors="replace"), cpu_flags(),
                          llama_cpp.__version__)
    if problem:
        raise EngineBuildError(problem)
