"""The embedded default configuration: the bundled models, or nothing when none is installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from server_core.config import (
    UpstreamSettings,
    default_config,
)


def test_default_config_serves_the_bundled_models() -> None:
    cfg = default_config()
    assert cfg.server.listen == "tcp:1135:interface=127.0.0.1"
    assert cfg.server.upstream == UpstreamSettings(10.0, 600.0, 300.0)
    assert cfg.llama.command_for(None) == ("llama-server", ())
    chat, completion = cfg.aliases.local_aliases()
    assert chat.name == "smollm2:135m"
    assert Path(chat.model_path).name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert Path(chat.model_path).stat().st_size == 98_362_432
    # The chat model's own template (Jinja, llama-server's default) is used: no override.
    assert not any("template" in p or "jinja" in p for p in chat.context_params)
    assert completion.name == "gemma3:270m"
    assert Path(completion.model_path).stat().st_size > 200_000_000  # the real 253 MB GGUF
    # A built-in template name is only a name with Jinja off (else it is template text).
    params = list(completion.context_params)
    assert params[params.index("--chat-template") + 1] == "gemma"
    assert params.index("--no-jinja") >= 0
    assert [m["id"] for m in cfg.aliases.list_models()] == ["smollm2:135m", "gemma3:270m"]
    assert cfg.source is None


def test_default_config_without_models_serves_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import server_core.config.defaults as defaults_module

    monkeypatch.setattr(defaults_module, "default_model_path", lambda: None)
    monkeypatch.setattr(defaults_module, "completion_model_path", lambda: None)
    assert default_config().aliases.list_models() == []
    gguf = tmp_path / "g.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(defaults_module, "completion_model_path", lambda: str(gguf))
    assert [m["id"] for m in default_config().aliases.list_models()] == ["gemma3:270m"]
