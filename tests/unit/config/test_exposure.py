"""Who can reach a listen address, and the start-up rule built on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactor
from twisted.logger import LogEvent, globalLogPublisher

from server_core.config import ServerSettings, parse_config
from server_core.config.exposure import (
    allowed_hosts,
    listen_address,
    unauthenticated_refusal,
    unauthenticated_warning,
)
from server_core.errors import ConfigError
from server_core.service import make_service


@pytest.mark.parametrize(
    ("description", "host", "local"),
    [
        ("tcp:1135:interface=127.0.0.1", "127.0.0.1", True),
        ("tcp:1135:127.0.0.2", "127.0.0.2", True),
        ("tcp:0:interface=localhost", "localhost", True),
        (r"tcp6:1135:interface=\:\:1", "[::1]", True),
        (r"tcp6:1:interface=\:\:ffff\:127.0.0.1", "[::ffff:7f00:1]", True),
        ("unix:/tmp/server-core-test.sock", None, True),
        ("tcp:1135", "", False),
        ("tcp:1135:interface=0.0.0.0", "", False),
        ("tcp6:1135", "", False),
        ("tcp:1135:interface=192.168.1.5", "192.168.1.5", False),
        ("systemd:domain=INET:index=0", None, False),  # unknown: assume the worst
    ],
)
def test_listen_address(description: str, host: str | None, local: bool) -> None:
    address = listen_address(description)
    assert (address.host, address.local) == (host, local)


def test_default_hosts_are_loopback_plus_listen_plus_configured() -> None:
    settings = ServerSettings(allowed_hosts=("mybox.lan", "localhost"))
    assert allowed_hosts(settings, "tcp:1:interface=10.0.0.5") == (
        "localhost", "127.0.0.1", "[::1]", "10.0.0.5", "mybox.lan",
    )  # fmt: skip
    assert allowed_hosts(ServerSettings(), "tcp:1") == ("localhost", "127.0.0.1", "[::1]")


def test_a_network_address_needs_keys_or_an_explicit_allowance() -> None:
    bare = ServerSettings()
    refusal = unauthenticated_refusal(bare, "tcp:1135")
    assert refusal is not None
    assert "api_keys: [KEY]" in refusal and "api_keys_env" in refusal
    assert "allow_unauthenticated: true" in refusal
    assert unauthenticated_refusal(bare, "tcp:1135:interface=127.0.0.1") is None
    assert unauthenticated_refusal(ServerSettings(api_keys=("k",)), "tcp:1135") is None
    allowed = ServerSettings(allow_unauthenticated=True)
    assert unauthenticated_refusal(allowed, "tcp:1135") is None
    assert "without API keys" in (unauthenticated_warning(allowed, "tcp:1135") or "")
    assert unauthenticated_warning(allowed, "tcp:1:interface=127.0.0.1") is None


def test_make_service_refuses_or_warns_in_process_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # reap nobody else's orphans
    config = parse_config("server:\n  listen: tcp:0\n", file="/etc/sc.yaml")
    with pytest.raises(ConfigError) as info:
        make_service(config, MemoryReactor())
    assert str(info.value).startswith("/etc/sc.yaml: refusing to listen on 'tcp:0'")
    open_config = parse_config("server:\n  listen: tcp:0\n  allow_unauthenticated: true\n")
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        make_service(open_config, MemoryReactor())
    finally:
        globalLogPublisher.removeObserver(events.append)
    warnings = [e for e in events if "without API keys" in str(e.get("warning", ""))]
    assert len(warnings) == 1 and warnings[0]["log_level"].name == "warn"
