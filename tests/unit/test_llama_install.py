"""Finding llama-server: configured path, then $PATH, then the build cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from server_core import llama_install


def executable(path: Path, version_ok: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + ("echo 'version: 1 (test)'\n" if version_ok else "exit 3\n"))
    path.chmod(0o755)
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    return tmp_path


def test_configured_path_wins(env: Path) -> None:
    configured = executable(env / "opt" / "llama-server")
    executable(env / "bin" / "llama-server")
    assert llama_install.find_llama_server(str(configured)) == str(configured)
    assert llama_install.find_llama_server(str(env / "missing")) is None


def test_path_before_cache(env: Path) -> None:
    executable(llama_install.cached_binary())
    on_path = executable(env / "bin" / "llama-server")
    assert llama_install.find_llama_server() == str(on_path)
    on_path.unlink()
    assert llama_install.find_llama_server() == str(llama_install.cached_binary())


def test_nothing_found(env: Path) -> None:
    assert llama_install.find_llama_server() is None


def test_cache_is_keyed_by_version_and_cpu(env: Path) -> None:
    path = llama_install.cached_binary()
    assert path.is_relative_to(env / "cache" / "server-core" / "llama-server")
    assert f"{llama_install.PACKAGE}-{llama_install.VERSION}-" in str(path)


def test_cached_run_prints_the_path_without_building(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    executable(llama_install.cached_binary())
    assert llama_install.main([]) == 0
    assert capsys.readouterr().out.strip() == str(llama_install.cached_binary())


def test_a_broken_cached_binary_is_not_trusted(env: Path) -> None:
    executable(llama_install.cached_binary(), version_ok=False)
    assert llama_install.verify(llama_install.cached_binary()) is None
    assert llama_install.main(["--print-path"]) == 1
