"""Find llama-server, or build it from the PyPI sdist of llama-cpp-python (cached per user).

    scripts/install-llama-server            # prints the path of the binary
    scripts/install-llama-server --force    # rebuild even when cached
    server-core-install-llama-server        # the same, once the package is installed

The source distribution ``llama-cpp-python==0.3.36`` carries llama.cpp (MIT) under
``vendor/llama.cpp``. Only the ``llama-server`` target is built (Release, tests off,
curl off, static), with progress, into
``$XDG_CACHE_HOME/server-core/llama-server/<key>/llama-server`` (default
``~/.cache/...``), where <key> names the llama-cpp-python version and this machine's
CPU (the build is tuned for the CPU it runs on). A second run with the cache present
takes seconds. The last line printed is the binary's path.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"


def cache_base() -> Path:
    """The user cache shared by llama-server builds and models."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "server-core"


def cache_root() -> Path:
    return cache_base() / "llama-server"


def cpu_key() -> str:
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    digest = hashlib.sha256(flags.encode()).hexdigest()[:10]
    return f"{platform.machine()}-{digest}"


# Bumped whenever the build recipe changes, so a cached binary of an older recipe is rebuilt.
RECIPE = "r2"


def cached_binary() -> Path:
    return cache_root() / f"{PACKAGE}-{VERSION}-{cpu_key()}-{RECIPE}" / "llama-server"


INSTALL_HINT = "scripts/install-llama-server (or server-core-install-llama-server)"


def find_llama_server(configured: str | None = None) -> str | None:
    """The llama-server to run: the configured one, then ``$PATH``, then the build cache."""
    if configured:
        if os.sep in configured:
            path = Path(configured).expanduser()
            return str(path) if path.is_file() and os.access(path, os.X_OK) else None
        return shutil.which(configured)
    on_path = shutil.which("llama-server")
    if on_path:
        return on_path
    cached = cached_binary()
    return str(cached) if cached.is_file() and os.access(cached, os.X_OK) else None


def say(message: str) -> None:
    print(f"[install-llama-server] {message}", file=sys.stderr, flush=True)


def verify(binary: Path) -> str | None:
    """The ``--version`` text when the binary runs, else None."""
    if not binary.is_file() or not os.access(binary, os.X_OK):
        return None
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout + out.stderr).strip()
    return text if out.returncode == 0 and "version" in text.lower() else None


def find_cmake() -> str | None:
    """cmake on PATH, else the one ``pip install cmake`` puts beside this Python."""
    found = shutil.which("cmake")
    if found:
        return found
    beside = Path(sys.executable).parent / "cmake"
    if beside.exists():
        return str(beside)
    say("cmake is missing: installing it from PyPI (pip install cmake)")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "cmake"], check=False)
    return str(beside) if beside.exists() else shutil.which("cmake")


def require_tools() -> str:
    """The cmake to use; exits with the packages to install when a tool is missing."""
    cmake = find_cmake()
    missing = [] if cmake else [("cmake", "cmake")]
    for tool, package in (("c++", "g++"), ("cc", "gcc"), ("make", "make")):
        if shutil.which(tool) is None:
            missing.append((tool, package))
    if missing:
        tools = ", ".join(t for t, _ in missing)
        packages = " ".join(sorted({p for _, p in missing}))
        raise SystemExit(
            f"[install-llama-server] missing build tools: {tools}.\n"
            f"Install them, e.g. on Debian/Ubuntu:  apt-get install -y {packages}\n"
            "(pip install cmake also provides cmake)"
        )
    assert cmake is not None
    return cmake


def download_sdist(workdir: Path) -> Path:
    say(f"downloading the {PACKAGE}=={VERSION} source distribution from PyPI")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "-q", "-d", str(workdir), f"{PACKAGE}=={VERSION}"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    archives = sorted(workdir.glob(f"{PACKAGE.replace('-', '_')}-{VERSION}.tar.gz")) + sorted(
        workdir.glob(f"{PACKAGE}-{VERSION}.tar.gz")
    )
    if not archives:
        raise SystemExit(
            f"[install-llama-server] pip could not download {PACKAGE}=={VERSION}:\n"
            + result.stderr[-2000:]
        )
    return archives[0]


def extract(archive: Path, workdir: Path) -> Path:
    say(f"extracting {archive.name}")
    with tarfile.open(archive) as tar:
        tar.extractall(workdir, filter="data")
    roots = [p for p in workdir.iterdir() if p.is_dir() and (p / "vendor" / "llama.cpp").is_dir()]
    if not roots:
        raise SystemExit("[install-llama-server] the sdist has no vendor/llama.cpp")
    return roots[0] / "vendor" / "llama.cpp"


# The build is tuned for this CPU (-march=native). A CPU may list AMX in /proc/cpuinfo
# while the kernel or hypervisor does not let a process use its tiles: llama-server then
# dies of SIGILL in its first matrix multiply (seen on this project's VMs). AMX only pays
# off for large models on big servers, so it is never compiled in. GCC and clang let an
# explicit -mno-* win over what -march=native implies, whatever their order.
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


def run_build(source: Path, build: Path, jobs: int, cmake: str) -> Path:
    configure = [cmake, "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                 "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_CURL=OFF",
                 "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_SERVER=ON",
                 f"-DCMAKE_C_FLAGS={NO_AMX}", f"-DCMAKE_CXX_FLAGS={NO_AMX}"]  # fmt: skip
    say("configuring with cmake")
    result = subprocess.run(configure, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit("[install-llama-server] cmake configure failed:\n" + result.stdout[-3000:]
                         + result.stderr[-3000:])  # fmt: skip
    say(f"building llama-server on {jobs} cores (a fresh 2-core machine needs about 7 minutes)")
    build_cmd = [cmake, "--build", str(build), "--target", "llama-server", "-j", str(jobs)]
    start = time.monotonic()
    proc = subprocess.Popen(build_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    tail: list[str] = []
    last_shown = -1
    for line in proc.stdout:
        tail = [*tail[-39:], line.rstrip()]
        match = re.match(r"\[\s*(\d+)%\]", line)
        if match:
            percent = int(match.group(1))
            if percent != last_shown:
                last_shown = percent
                elapsed = time.monotonic() - start
                say(f"build {percent:3d}%  ({elapsed:4.0f} s)")
    if proc.wait() != 0:
        raise SystemExit("[install-llama-server] build failed:\n" + "\n".join(tail))
    say(f"built in {time.monotonic() - start:.0f} s")
    binary = build / "bin" / "llama-server"
    if not binary.exists():
        found = list(build.rglob("llama-server"))
        if not found:
            raise SystemExit("[install-llama-server] build finished but no llama-server binary")
        binary = found[0]
    return binary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--print-path", action="store_true", help="only print the cached path")
    args = parser.parse_args(argv)

    target = cached_binary()
    if args.print_path:
        print(target)
        return 0 if verify(target) else 1
    if not args.force:
        version = verify(target)
        if version:
            say(f"cached: {version.splitlines()[0]}")
            print(target)
            return 0
    cmake = require_tools()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llama-build-") as tmp:
        workdir = Path(tmp)
        source = extract(download_sdist(workdir), workdir)
        binary = run_build(source, workdir / "build", args.jobs, cmake)
        partial = target.with_name(target.name + ".partial")
        shutil.copy2(binary, partial)
        os.replace(partial, target)  # atomic: a half-copied binary is never "cached"
    version = verify(target)
    if not version:
        raise SystemExit(f"[install-llama-server] {target} does not run (--version failed)")
    say(f"installed: {version.splitlines()[0]}")
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
