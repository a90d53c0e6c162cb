"""What /api/tags, /api/show and /api/ps say about a model, from its alias and GGUF header."""

from __future__ import annotations

from pathlib import Path

from server_core.aliases import LocalAlias
from server_core.ollama.catalog import capabilities, card_for, served_context
from server_core.ollama.gguf import GgufCache, read_gguf_info
from tests.unit.ollama.gguf_files import TEMPLATE, write_gguf


def alias(path: Path, *params: str, name: str = "tiny") -> LocalAlias:
    return LocalAlias(name, str(path), "user", {}, context_params=params)


def test_tag_carries_gguf_details_size_and_a_stable_digest(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny.gguf")
    card = card_for("tiny", alias(path), GgufCache(), 0.0)
    tag = card.tag()
    assert tag["name"] == tag["model"] == "tiny"
    assert tag["size"] == path.stat().st_size and len(tag["digest"]) == 64
    assert tag["details"] == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "128.1K",
        "quantization_level": "Q4_K_M",
    }
    assert card_for("tiny", alias(path), GgufCache(), 0.0).digest == card.digest


def test_show_has_model_info_with_context_length_and_basename(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny.gguf")
    shown = card_for("tiny", alias(path), GgufCache(), 0.0).show()
    info = shown["model_info"]
    assert info["general.architecture"] == "llama"
    assert info["general.basename"] == "Tiny-Llama"
    assert info["llama.context_length"] == 8192
    assert info["general.parameter_count"] == 128064
    assert "tokenizer.chat_template" not in info and shown["template"] == TEMPLATE
    assert shown["capabilities"] == ["completion", "tools"]


def test_the_served_context_is_the_smaller_of_flag_and_training(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny.gguf")
    info = read_gguf_info(str(path))
    assert served_context(alias(path, "--ctx-size", "2048"), info) == 2048
    assert served_context(alias(path, "-c=100000"), info) == 8192
    assert served_context(alias(path, "-c", "0"), info) == 8192
    assert served_context(alias(path), None) is None
    shown = card_for("tiny", alias(path, "-c", "4096"), GgufCache(), 0.0).show()
    assert shown["model_info"]["llama.context_length"] == 4096


def test_capabilities_by_flags_and_template(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny.gguf")
    info = read_gguf_info(str(path))
    assert capabilities(alias(path, "--embeddings"), info) == ["embedding"]
    assert capabilities(alias(path, "--mmproj", "p.gguf"), info) == [
        "completion",
        "tools",
        "vision",
    ]
    assert capabilities(alias(path), None) == ["completion"]
    assert capabilities(None, None) == ["completion", "tools"]  # someone else's server


def test_a_model_without_a_file_is_listed_without_details(tmp_path: Path) -> None:
    card = card_for("remote", None, GgufCache(), 1000.0)
    tag = card.tag()
    assert tag["size"] == 0 and tag["modified_at"] == "1970-01-01T00:16:40Z"
    assert tag["details"]["family"] == "" and tag["details"]["format"] == ""
    assert card.show()["model_info"] == {}
    missing = card_for("gone", alias(tmp_path / "gone.gguf"), GgufCache(), 0.0)
    assert missing.tag()["size"] == 0 and missing.show()["model_info"] == {}


def test_running_entry_expiry_and_context(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny.gguf")
    card = card_for("tiny", alias(path, "-c", "1024"), GgufCache(), 0.0)
    row = card.running(60.0, 0.0)
    assert row["expires_at"] == "1970-01-01T00:01:00Z" and row["size_vram"] == 0
    assert row["context_length"] == 1024 and row["model"] == "tiny"
    assert card.running(None, 0.0)["expires_at"].startswith("2069-")
