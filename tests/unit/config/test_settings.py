"""The frozen settings: defaults, the llama-server command, and the upstream timeouts' type."""

from __future__ import annotations

from types import MappingProxyType

import server_core.upstream
from server_core.config import DEFAULT_EXECUTABLE, Config, LlamaSettings, ServerSettings
from server_core.config import UpstreamSettings as ConfigUpstreamSettings


def test_upstream_settings_are_the_http_clients_own() -> None:
    # One class: the value parsed from the file is what UpstreamClient takes, unconverted.
    assert ConfigUpstreamSettings is server_core.upstream.UpstreamSettings
    assert type(ServerSettings().upstream) is server_core.upstream.UpstreamSettings


def test_command_for_a_variant_or_the_default() -> None:
    assert LlamaSettings().command_for(None) == (DEFAULT_EXECUTABLE, ())
    llama = LlamaSettings(
        executable="/opt/llama-server",
        args=("-t", "4"),
        variants=MappingProxyType({"vk": ("/opt/vk", ("-ngl", "99"))}),
    )
    assert llama.command_for() == ("/opt/llama-server", ("-t", "4"))
    assert llama.command_for("vk") == ("/opt/vk", ("-ngl", "99"))


def test_an_empty_config_has_no_source_and_no_aliases() -> None:
    cfg = Config()
    assert cfg.source is None
    assert cfg.aliases.list_models() == []
    assert cfg.server.api_keys == ()
