"""Model folders: each GGUF file becomes an alias named after it."""

from __future__ import annotations

from pathlib import Path

import pytest

from server_core.config.model_dirs import model_alias_name
from tests.unit.config.support import assert_error_at_marked_line, parse


def test_model_dirs_scan(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    for name in [
        "Qwen2.5-0.5B-Q4_K_M.gguf",
        "big-00001-of-00003.gguf",
        "big-00002-of-00003.gguf",
        "big-00003-of-00003.gguf",
        "mmproj-model-f16.gguf",
        "notes.txt",
        "mine.GGUF",
        ".hidden.gguf",
    ]:
        (one / name).write_bytes(b"")
    (one / "folder.gguf").mkdir()
    (two / "qwen2.5-0.5b-q4_k_m.gguf").write_bytes(b"")  # same alias: the first folder wins
    (two / "zeta.gguf").write_bytes(b"")
    (tmp_path / "user.gguf").write_bytes(b"")
    cfg = parse("model_dirs: [one, two]\naliases: [{alias: zeta, model: user.gguf}]\n", tmp_path)
    listed = [(m["id"], m["kind"]) for m in cfg.aliases.list_models()]
    assert listed == [
        ("zeta", "user"),
        ("big", "model"),
        ("mine", "model"),
        ("qwen2.5-0.5b-q4_k_m", "model"),
    ]
    paths = {a.name: a.model_path for a in cfg.aliases.local_aliases()}
    assert paths["big"] == str(one / "big-00001-of-00003.gguf")
    assert paths["qwen2.5-0.5b-q4_k_m"] == str(one / "Qwen2.5-0.5B-Q4_K_M.gguf")
    assert paths["zeta"] == str(tmp_path / "user.gguf")
    assert cfg.aliases.resolve("Qwen2.5-0.5B-Q4_K_M").name == "qwen2.5-0.5b-q4_k_m"


# -- errors, each with its line ----------------------------------------------------

ERRORS: list[tuple[str, str]] = [
    ("model_dirs: [nowhere]  # <-\n", "model_dirs[0]: model folder"),
    ("model_dirs: [models/a.gguf]  # <-\n", "is not a folder"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_error_names_file_and_line(base: Path, text: str, message: str) -> None:
    assert_error_at_marked_line(base, text, message)


@pytest.mark.parametrize(
    ("filename", "alias"),
    [
        ("Foo-Q4.gguf", "foo-q4"),
        ("big-00001-of-00003.gguf", "big"),
        ("big-00002-of-00003.gguf", None),
        ("mmproj-model-f16.gguf", None),
        ("MMPROJ.gguf", None),
        (".hidden.gguf", None),
        ("notes.txt", None),
        (".gguf", None),
    ],
)
def test_model_alias_name(filename: str, alias: str | None) -> None:
    assert model_alias_name(filename) == alias
