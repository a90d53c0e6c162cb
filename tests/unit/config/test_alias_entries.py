"""The aliases, external and apis lists: targets, URLs, names used once, variants."""

from __future__ import annotations

from pathlib import Path

import pytest

from server_core.aliases import RemoteTarget
from tests.unit.config.support import ALIAS_A, assert_error_at_marked_line, parse


@pytest.mark.parametrize(
    ("url", "base_url"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/v1"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/v1"),
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
        ("https://llm.example/v1/", "https://llm.example/v1"),
        ("https://llm.example/proxy", "https://llm.example/proxy/v1"),
        ("http://[::1]:9000", "http://[::1]:9000/v1"),
    ],
)
def test_external_url_becomes_v1_root(base: Path, url: str, base_url: str) -> None:
    cfg = parse(f"external: [{{alias: e, url: '{url}'}}]", base)
    target = cfg.aliases.resolve("e")
    assert isinstance(target, RemoteTarget)
    assert target.base_url == base_url
    assert (target.api_key, target.upstream_model) == (None, None)


# -- errors, each with its line ----------------------------------------------------

ERRORS: list[tuple[str, str]] = [
    (
        "aliases:\n  - alias: a\n    model: models/missing.gguf  # <-\n",
        "alias 'a': model file",
    ),
    ("aliases:\n  - alias: a\n    model: models  # <-\n", "is not a file"),
    (
        ALIAS_A + "  - alias: a  # <-\n    model: models/a.gguf\n",
        "aliases[1] ('a').alias: alias name 'a' is already used on line 2",
    ),
    (
        ALIAS_A + "external:\n  - alias: a  # <-\n    url: http://h\n",
        "alias name 'a' is already used on line 2",
    ),
    (
        ALIAS_A + "    variant: cpu  # <-\n",
        "aliases[0] ('a').variant: no variant 'cpu' (llama_server.variants is empty)",
    ),
    (
        "llama_server: {variants: {vulkan: {}}}\n" + ALIAS_A + "    variant: vulkn  # <-\n",
        "no variant 'vulkn' (did you mean 'vulkan'?)",
    ),
    ("apis:\n  - name: o  # <-\n    base_url: https://x/v1\n", "apis[0] ('o'): lists no models"),
    (
        "apis:\n  - name: o\n    base_url: https://x/v1\n    forward_all_with_prefix: true  # <-\n",
        "forward_all_with_prefix: needs a prefix",
    ),
    (
        "apis:\n  - name: o\n    base_url: https://x/v1\n    models: [m]\n"
        "  - name: p\n    base_url: https://y/v1\n    models: [n, m]  # <-\n",
        "apis[1] ('p').models[1]: 'm' is already served by API 'o' (line 4)",
    ),
    (
        "apis:\n  - name: o\n    base_url: https://x/v1\n    models: [m]\n"
        "  - name: o  # <-\n    base_url: https://y/v1\n    models: [n]\n",
        "API name 'o' is already used on line 2",
    ),
    (
        "apis:\n  - {name: o, base_url: 'https://x/v1', prefix: p/, forward_all_with_prefix: yes}\n"
        "  - {name: q, base_url: 'https://y/v1', prefix: p/, forward_all_with_prefix: yes}  # <-\n",
        "'p/' already forwards to API 'o' (line 2)",
    ),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_error_names_file_and_line(base: Path, text: str, message: str) -> None:
    assert_error_at_marked_line(base, text, message)
