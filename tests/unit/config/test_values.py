"""The configuration's value kinds: TTLs, flags, request params, URLs, names, keys from env."""

from __future__ import annotations

from pathlib import Path

import pytest

from server_core.aliases import RemoteTarget
from server_core.errors import ConfigError
from tests.unit.config.support import ALIAS_A, EXTERNAL_E, assert_error_at_marked_line, parse


def test_api_key_optional_and_keys_env(base: Path) -> None:
    cfg = parse(
        """
        server:
          api_keys_env: KEYS
        apis:
          - name: local
            base_url: http://127.0.0.1:11434/v1
            api_key_env: LOCAL_KEY
            api_key_optional: true
            models: [llama3]
        """,
        base,
        env={"KEYS": " a, b ,,c "},
    )
    assert cfg.server.api_keys == ("a", "b", "c")
    target = cfg.aliases.resolve("llama3")
    assert isinstance(target, RemoteTarget)
    assert (target.api_key, target.upstream_model) == (None, "llama3")


def test_ttl_values(base: Path) -> None:
    for ttl in (-1, 0, 0.5, 3600):
        assert parse(f"llama_server: {{ttl: {ttl}}}", base).llama.ttl == ttl
    cfg = parse("aliases: [{alias: a, model: models/a.gguf, ttl: null}]", base)
    assert cfg.aliases.local_aliases()[0].ttl is None


def test_context_params_list_accepts_numbers(base: Path) -> None:
    cfg = parse(
        "aliases: [{alias: a, model: models/a.gguf, context_params: [-c, 2048, --temp, 0.5]}]",
        base,
    )
    assert cfg.aliases.local_aliases()[0].context_params == ("-c", "2048", "--temp", "0.5")


@pytest.mark.parametrize(
    ("yaml_text", "line", "needle"),
    [
        ("aliases: [{alias: a, model: models/a.gguf,\n  context_params: [--ctx-size]}]", 2,
         "--ctx-size"),
        ("aliases:\n  - {alias: a, model: models/a.gguf, context_params: 'hello'}", 2, "hello"),
        ("aliases:\n  - {alias: a, model: models/a.gguf, context_params: [--port=9]}", 2,
         "--port"),
        ("llama_server:\n  args: [--threads]", 2, "--threads"),
        ("llama_server:\n  max_queue: 0", 2, "max_queue"),
        ("llama_server:\n  ttl: " + "9" * 400, 2, "finite"),
        ("server:\n  listen: 'tcp:notaport'", 2, "listen"),
    ],
)  # fmt: skip
def test_values_that_would_fail_later_fail_at_their_line(
    base: Path, yaml_text: str, line: int, needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse(yaml_text, base)
    assert info.value.line == line and needle in str(info.value)


# -- errors, each with its line ----------------------------------------------------

ERRORS: list[tuple[str, str]] = [
    ("llama_server:\n  ttl: -2  # <-\n", "llama_server.ttl: must be -1 (never stop), 0"),
    ("llama_server:\n  args: [--port, 8080]  # <-\n", "server_core sets --port itself"),
    (
        "llama_server:\n  variants:\n    cpu:\n      args:\n"
        "        - -t\n        - --host=0.0.0.0  # <-\n",
        "llama_server.variants.cpu.args: server_core sets --host itself",
    ),
    ("server:\n  api_keys_env: NO_SUCH_KEYS  # <-\n", "variable NO_SUCH_KEYS is not set"),
    ("server:\n  api_keys_env: EMPTY  # <-\n", "variable EMPTY holds no key"),
    ("server:\n  api_keys_env: not a name  # <-\n", "expected the name of an environment"),
    ("aliases:\n  - alias: ' a'  # <-\n    model: models/a.gguf\n", "surrounding spaces"),
    (
        ALIAS_A + "    ttl: -5  # <-\n",
        "aliases[0] ('a').ttl: must be -1",
    ),
    (
        ALIAS_A + "    context_params: -m other.gguf  # <-\n",
        "context_params: server_core sets -m itself",
    ),
    (
        ALIAS_A + "    context_params: '--x \"open'  # <-\n",
        "context_params: cannot split into flags",
    ),
    (
        ALIAS_A + "    context_params: [-c, true]  # <-\n",
        "context_params[1]: expected a string or a number",
    ),
    (
        ALIAS_A + "    request_params:\n      model: b  # <-\n",
        "request_params: 'model' cannot have a default",
    ),
    (
        ALIAS_A + "    request_params: [1]  # <-\n",
        "request_params: expected a mapping of request fields",
    ),
    ("external:\n  - alias: e\n    url: ftp://h  # <-\n", "must be an http:// or https:// URL"),
    ("external:\n  - alias: e\n    url: http://  # <-\n", "with a host"),
    ("external:\n  - alias: e\n    url: http://h:99999  # <-\n", "not a valid URL"),
    ("external:\n  - alias: e\n    url: http://u:p@h  # <-\n", "do not put credentials"),
    ("external:\n  - alias: e\n    url: http://h/?x=1  # <-\n", "remove the '?...'"),
    (
        EXTERNAL_E + "    api_key_env: EXT_KEY  # <-\n",
        "external[0] ('e').api_key_env: environment variable EXT_KEY is not set",
    ),
    (
        "apis:\n  - name: o\n    base_url: https://x/v1\n    api_key_env: OPENAI_API_KEY  # <-\n"
        "    models: [m]\n",
        "environment variable OPENAI_API_KEY is not set; set it, or add 'api_key_optional: true'",
    ),
    ("apis:\n  - name: o\n    base_url: https://x/v1\n    prefix: 3  # <-\n", "like 'openai/'"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_error_names_file_and_line(base: Path, text: str, message: str) -> None:
    assert_error_at_marked_line(base, text, message)
