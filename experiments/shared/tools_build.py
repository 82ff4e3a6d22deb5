"""``make tools`` (``python -m experiments.shared.tools_build``): llama.cpp's tools built from the sdist of the
installed llama-cpp-python. The sdist is fetched with ``pip download`` by version (the package registry is the only
source), configured with the Makefile's flags (no AMX kernels) and with nothing fetched at build time (no prebuilt
web UI, no OpenSSL, no tests or examples), built with progress, and moved into place in one rename. A second run
finds them and returns in milliseconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from experiments.shared.llama_build import EngineBuildError
from experiments.shared.llama_tools import (
    BUILD_COMMAND,
    PACKAGE,
    TOOLS,
    ToolsMissing,
    built,
    engine_version,
    has_amx_kernels,
    tools_dir,
)

#: CMake options: static binaries, no AMX kernels (llama.cpp issue 20824), nothing downloaded while building.
CMAKE_OPTIONS = ("-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                 "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_BUILD_UI=OFF",
                 "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF", "-DGGML_OPENMP_FETCH=OFF",
                 "-DCMAKE_C_FLAGS=-mno-amx-int8", "-DCMAKE_CXX_FLAGS=-mno-amx-int8")

def _run(cmd: list[str], log_file: Path, what: str) -> None:
    """Run a build step, its output into ``log_file``, printing CMake's progress (``[ 42%]``) as it moves."""
    shown = -10
    with open(log_file, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            if (m := re.match(r"\[\s*(\d+)%\]", line)) and int(m.group(1)) >= shown + 10:
                shown = int(m.group(1))
                print(f"  {what}: {shown}%", file=sys.stderr, flush=True)
        if proc.wait() != 0:
            tail = [x.strip() for x in log_file.read_text(errors="replace").splitlines() if x.strip()][-1:]
            raise ToolsMissing(f"{what} failed (exit {proc.returncode}; its log: {log_file}): "
                               f"{tail[0] if tail else ''}; the command: {' '.join(cmd)}")


def _fetch_sdist(version: str, into: Path, log_file: Path) -> Path:
    """The llama.cpp tree of ``llama-cpp-python==version``'s sdist, fetched with pip (its HTTP cache makes a second
    fetch local) and unpacked under ``into``."""
    req = f"{PACKAGE}=={version}"
    print(f"  fetching the {req} sdist with pip download", file=sys.stderr, flush=True)
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check",
          req, "-d", str(into)], log_file, f"pip download {req}")
    archives = sorted(into.glob(f"{PACKAGE.replace('-', '_')}-{version}.tar.gz"))
    if not archives:
        raise ToolsMissing(f"pip download {req} gave no sdist in {into}")
    with tarfile.open(archives[0]) as tar:
        tar.extractall(into, filter="data")
    tree = into / archives[0].name.removesuffix(".tar.gz") / "vendor" / "llama.cpp"
    if not (tree / "CMakeLists.txt").is_file():
        raise ToolsMissing(f"the {req} sdist carries no vendor/llama.cpp")
    return tree


def build(version: str | None = None, jobs: int | None = None) -> Path:
    """Build the tools of ``version`` (default: the installed engine's) unless built; their folder."""
    version = version or engine_version()
    folder = tools_dir(version)
    if built(version) is not None:
        print(f"llama.cpp tools {version}: built already in {folder}", file=sys.stderr)
        return folder
    for program in ("cmake", "c++"):
        if shutil.which(program) is None:
            raise ToolsMissing(f"building llama.cpp's tools needs `{program}` on PATH; then run `{BUILD_COMMAND}`")
    folder.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f".building-{version}-", dir=folder.parent))
    log_file = work / "build.log"
    print(f"building llama.cpp's {', '.join(TOOLS)} from {PACKAGE}=={version} (no AMX kernels, nothing downloaded "
          f"but the sdist), about 8 to 12 minutes on 2 cores, once; log: {log_file}", file=sys.stderr, flush=True)
    try:
        tree = _fetch_sdist(version, work / "src", log_file)
        build_dir = work / "build"
        _run(["cmake", "-S", str(tree), "-B", str(build_dir), *CMAKE_OPTIONS], log_file, "cmake configure")
        _run(["cmake", "--build", str(build_dir), "-j", str(jobs or os.cpu_count() or 1), "--target", *TOOLS],
             log_file, "cmake build")
        stage = work / "out"
        (stage / "bin").mkdir(parents=True)
        for t in TOOLS:
            shutil.copy2(build_dir / "bin" / t, stage / "bin" / t)
        shutil.copy2(log_file, stage / "build.log")
        record = {"version": version, "tools": list(TOOLS), "cmake_options": list(CMAKE_OPTIONS),
                  "seconds": round(time.perf_counter() - started, 1), "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
                  "amx_kernels": has_amx_kernels(stage / "bin" / "llama-server")}
        (stage / "build.json").write_text(json.dumps(record, indent=1) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(stage, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"llama.cpp tools {version} built in {time.perf_counter() - started:.0f} s: {folder / 'bin'}",
          file=sys.stderr)
    return folder


def main() -> int:
    try:
        build()
    except (ToolsMissing, EngineBuildError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
