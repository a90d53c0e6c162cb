"""server.metrics_public, server.node_name, server.json_logs: defaults, values, errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.unit.config.support import assert_error_at_marked_line, parse


def test_defaults_keep_metrics_private_name_the_host_and_log_no_json(base: Path) -> None:
    server = parse("server: {}\n", base).server
    assert server.metrics_public is False
    assert server.node_name == socket.gethostname()
    assert server.json_logs is False
    assert server.access_log is False


def test_values_are_read(base: Path) -> None:
    text = """
        server:
          metrics_public: true
          node_name: gpu-box_2.rack-1
          json_logs: true
          access_log: true
    """
    server = parse(text, base).server
    assert server.access_log is True
    assert (server.metrics_public, server.node_name, server.json_logs) == (
        True,
        "gpu-box_2.rack-1",
        True,
    )


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("  metrics_public: sometimes  # <-\n", "expected true or false"),
        ("  json_logs: 1  # <-\n", "expected true or false"),
        ("  access_log: on please  # <-\n", "expected true or false"),
        ("  node_name: 'a b'  # <-\n", "server.node_name: expected a node name"),
        ("  node_name: 'a/b'  # <-\n", "got 'a/b'"),
        ("  node_name: '-a'  # <-\n", "starting with a letter or digit"),
        ("  node_name: ''  # <-\n", "server.node_name"),
        ("  node_name: " + "a" * 64 + "  # <-\n", "up to 63"),
        ("  node_name: [a]  # <-\n", "server.node_name"),
    ],
)
def test_a_bad_value_names_its_line(base: Path, snippet: str, message: str) -> None:
    assert_error_at_marked_line(base, "server:\n" + snippet, message)


def test_a_misspelt_key_gets_a_suggestion(base: Path) -> None:
    assert_error_at_marked_line(base, "server:\n  metric_public: true  # <-\n", "metrics_public")


def test_preload_names_managed_models(base: Path) -> None:
    text = """
        llama_server:
          preload: [a]
        aliases:
          - alias: a
            model: models/a.gguf
    """
    assert parse(text, base).llama.preload == ("a",)
    assert parse("llama_server: {}\n", base).llama.preload == ()


@pytest.mark.parametrize(
    ("preload", "message"),
    [
        ("[nope]", "'nope' is not a managed model (managed: a)"),
        ("[e]", "'e' is not a managed model"),
        ("a", "llama_server.preload: expected a list"),
    ],
)
def test_preload_of_anything_else_names_its_line(base: Path, preload: str, message: str) -> None:
    text = (
        f"llama_server:\n  preload: {preload}  # <-\n"
        "aliases:\n  - alias: a\n    model: models/a.gguf\n"
        "external:\n  - alias: e\n    url: http://h\n"
    )
    assert_error_at_marked_line(base, text, message)
