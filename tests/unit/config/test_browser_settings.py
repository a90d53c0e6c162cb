"""``server.allowed_hosts``, ``server.cors_origins`` and ``server.allow_unauthenticated``."""

from __future__ import annotations

from pathlib import Path

import pytest

from server_core.config import ServerSettings
from server_core.config.browser_values import is_ip_literal, normalize_origin, split_host
from tests.unit.config.support import assert_error_at_marked_line, parse


def test_defaults_accept_no_origin_and_require_keys_off_loopback() -> None:
    d = ServerSettings()
    assert (d.allowed_hosts, d.cors_origins, d.allow_unauthenticated) == ((), (), False)


def test_the_three_keys_are_read_and_normalised(base: Path) -> None:
    cfg = parse(
        """
        server:
          allowed_hosts: [MyHost.LAN, "myhost.lan:8080", 192.168.1.5, "[FE80::1]:1135", "*"]
          cors_origins: ["HTTP://LocalHost:3000/", "https://app.example:443"]
          allow_unauthenticated: true
        """,
        base,
    )
    assert cfg.server.allowed_hosts == (
        "myhost.lan",
        "myhost.lan:8080",
        "192.168.1.5",
        "[fe80::1]:1135",
        "*",
    )
    assert cfg.server.cors_origins == ("http://localhost:3000", "https://app.example")
    assert cfg.server.allow_unauthenticated is True


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("  allowed_hosts: [ok, 'http://x']  # <-\n", "expected a host name as clients write"),
        ("  allowed_hosts:\n    - 'a b'  # <-\n", "server.allowed_hosts[0]: expected a host"),
        ("  allowed_hosts:\n    - 'h:99999'  # <-\n", "got 'h:99999'"),
        ("  allowed_hosts:\n    - '::1'  # <-\n", "'[fe80::1]'"),
        ("  allowed_hosts: localhost  # <-\n", "server.allowed_hosts: expected a list"),
        ("  cors_origins:\n    - localhost:3000  # <-\n", "expected a web origin"),
        ("  cors_origins:\n    - 'http://a.example/app'  # <-\n", "no path"),
        ("  cors_origins:\n    - 'ftp://a.example'  # <-\n", "server.cors_origins[0]"),
        ("  cors_origins:\n    - '*'  # <-\n", "got '*'"),
        ("  allow_unauthenticated: yes please  # <-\n", "expected true or false"),
    ],
)
def test_a_bad_value_names_its_line(base: Path, snippet: str, message: str) -> None:
    assert_error_at_marked_line(base, "server:\n" + snippet, message)


def test_an_unknown_neighbour_gets_a_suggestion(base: Path) -> None:
    assert_error_at_marked_line(base, "server:\n  allowed_host: [x]  # <-\n", "allowed_hosts")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("localhost", ("localhost", None)),
        ("LOCALHOST.:1135", ("localhost", 1135)),
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]", ("[::1]", None)),
        ("[::1]:1135", ("[::1]", 1135)),
        ("::1", None),
        ("[::1", None),
        ("[zz]:1", None),
        ("host:0", None),
        ("host:", None),
        ("ho st", None),
        ("", None),
        ("evil.example:1135", ("evil.example", 1135)),
    ],
)
def test_split_host(value: str, expected: tuple[str, int | None] | None) -> None:
    assert split_host(value) == expected


def test_ip_literals_and_origins() -> None:
    assert is_ip_literal("10.0.0.5") and is_ip_literal("[fe80::1]")
    assert not is_ip_literal("localhost") and not is_ip_literal("10.0.0")
    assert normalize_origin("http://localhost:80") == "http://localhost"
    assert normalize_origin("null") is None
    assert normalize_origin("http://user@host") is None
