"""The ``ollama`` section: the version /api/version reports and the keep_alive cap."""

from __future__ import annotations

from pathlib import Path

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock

from server_core.config import OllamaSettings
from server_core.testing import StubRouter
from server_core.web import OpenAIRoutes
from tests.unit.config.support import assert_error_at_marked_line, parse


def test_defaults(base: Path) -> None:
    assert parse("server: {}\n", base).ollama == OllamaSettings("0.12.3", None)


def test_values_are_read(base: Path) -> None:
    ollama = parse("ollama:\n  version: 0.6.4.1\n  max_keep_alive: 600\n", base).ollama
    assert ollama == OllamaSettings("0.6.4.1", 600.0)


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("  version: latest  # <-\n", "expected a version such as 0.12.3"),
        ("  version: '1'  # <-\n", "got '1'"),
        ("  max_keep_alive: 0  # <-\n", "ollama.max_keep_alive"),
        ("  max_keep_alive: -5  # <-\n", "ollama.max_keep_alive"),
        ("  keepalive: 5  # <-\n", "max_keep_alive"),
    ],
)
def test_a_bad_value_names_its_line(base: Path, snippet: str, message: str) -> None:
    assert_error_at_marked_line(base, "ollama:\n" + snippet, message)


def test_the_configured_version_is_what_clients_are_told() -> None:
    clock = Clock()
    routes = OpenAIRoutes(StubRouter(clock), clock=clock, ollama=OllamaSettings("0.9.0", 60))
    stub = StubTreq(routes.resource())
    d = stub.get("http://server/api/version")
    stub.flush()
    body = d.result.json()
    stub.flush()
    assert body.result == {"version": "0.9.0"}
