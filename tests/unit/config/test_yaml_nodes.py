"""The generic YAML node checks: keys, merges, types, JSON data, syntax errors, lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from server_core.config import (
    parse_config,
)
from server_core.errors import ConfigError
from tests.unit.config.support import ALIAS_A, EXTERNAL_E, assert_error_at_marked_line, parse


def test_anchors_merge_keys_and_x_keys(base: Path) -> None:
    cfg = parse(
        """
        x-defaults: &defaults {temperature: 0.1, top_k: 20}
        aliases:
          - alias: a
            model: models/a.gguf
            request_params: {<<: *defaults, top_k: 5}
          - alias: b
            model: models/a.gguf
            request_params: *defaults
        """,
        base,
    )
    a, b = cfg.aliases.local_aliases()
    assert dict(a.request_params) == {"temperature": 0.1, "top_k": 5}
    assert dict(b.request_params) == {"temperature": 0.1, "top_k": 20}


def test_syntax_error_mentions_where_the_unclosed_thing_started(base: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("server:\n  listen: [a, b\nllama_server: {}\n", file="c.yaml", env={})
    assert "while parsing a flow sequence (line 2)" in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (EXTERNAL_E + "    request_params:\n      x: &a [*a]\n", "refers to its own parent"),
        (EXTERNAL_E + "    request_params: &m\n      <<: *m\n", "merges a mapping into itself"),
        (
            "x-a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
            + "".join(
                f"x-{i}: &l{i} [{', '.join(['*' + ('a' if i == 0 else f'l{i - 1}')] * 10)}]\n"
                for i in range(6)
            )
            + EXTERNAL_E
            + "    request_params: {x: *l5}\n",
            "too much data",
        ),
    ],
)
def test_alias_cycles_and_expansion_bombs(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text, file="c.yaml", env={})


# -- errors, each with its line ----------------------------------------------------

ERRORS: list[tuple[str, str]] = [
    ("servr:  # <-\n  listen: x\n", "unknown key 'servr' (did you mean 'server'?)"),
    (
        "server:\n  upstream:\n    conect_timeout: 1  # <-\n",
        "server.upstream: unknown key 'conect_timeout' (did you mean 'connect_timeout'?)",
    ),
    ("llama_server:\n  frobnicate: 1  # <-\n", "unknown key 'frobnicate' (expected one of:"),
    (
        "server:\n  max_body_bytes: ten  # <-\n",
        "server.max_body_bytes: expected a whole number, got the string 'ten'",
    ),
    ("server:\n  max_body_bytes: 0  # <-\n", "server.max_body_bytes: must be a whole number >= 1"),
    (
        "llama_server:\n  start_timeout: yes  # <-\n",
        "llama_server.start_timeout: expected a number, got the boolean yes",
    ),
    ("server:\n  keepalive_interval: -1  # <-\n", "greater than 0, got -1"),
    ("server:\n  upstream: {idle_timeout: .inf}  # <-\n", "expected a finite number"),
    ("llama_server:\n  max_loaded: 0  # <-\n", "max_loaded: must be a whole number >= 1"),
    ("llama_server:\n  max_concurrent_per_alias: 0  # <-\n", "must be a whole number >= 1"),
    ("llama_server:\n  variants:\n    cpu: [a]  # <-\n", "variants.cpu: expected a mapping"),
    ("server:\n  listen: a\n  listen: b  # <-\n", "key 'listen' appears twice (first on line 2)"),
    ("server:\n  api_keys: k  # <-\n", "server.api_keys: expected a list, got the string 'k'"),
    ("server:\n  api_keys: [a, '']  # <-\n", "server.api_keys[1]: must not be empty"),
    ("- 1  # <-\n", "the configuration: expected a mapping (key: value), got a list"),
    ("aliases: {alias: a}  # <-\n", "aliases: expected a list, got a mapping"),
    ("aliases:\n  - model: models/a.gguf  # <-\n", "aliases[0]: missing required key 'alias'"),
    (
        ALIAS_A + "    modle: x  # <-\n",
        "unknown key 'modle' (did you mean 'model'?)",
    ),
    (
        EXTERNAL_E + "    request_params:\n      when: 2024-01-01  # <-\n",
        "request_params.when: the date 2024-01-01 is not a JSON value; quote it",
    ),
    (
        EXTERNAL_E + "    request_params:\n      x: !!python/name:os.system  # <-\n",
        "request_params.x: cannot read this value",
    ),
    (
        EXTERNAL_E + "    request_params:\n      x: !!set {a}  # <-\n",
        "YAML tag tag:yaml.org,2002:set is not supported here",
    ),
    ("server:\n  listen: 'tcp:1  # <-\n  x: 1\n", "YAML syntax error"),
    ("server:\n\tlisten: x  # <-\n", "YAML syntax error: while scanning for the next token"),
    ("server:\n  listen: [a, b\nllama_server: {}  # <-\n", "YAML syntax error"),
    ("a: 1\n---  # <-\nb: 2\n", "YAML syntax error: expected a single document"),
    ("server: {? [a]: 1}  # <-\n", "server: keys must be strings, got a list"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_error_names_file_and_line(base: Path, text: str, message: str) -> None:
    assert_error_at_marked_line(base, text, message)
