"""Configuration loading: values, defaults, paths, and every error with its file and line."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from server_core import config as config_module
from server_core.aliases import LocalAlias, RemoteTarget
from server_core.config import (
    Config,
    LlamaSettings,
    ServerSettings,
    UpstreamSettings,
    default_config,
    load_config,
    parse_config,
)
from server_core.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A config folder with models/a.gguf in it."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "a.gguf").write_bytes(b"GGUF")
    return tmp_path


def parse(text: str, base: Path, env: dict[str, str] | None = None) -> Config:
    return parse_config(textwrap.dedent(text), file="conf.yaml", env=env or {}, base_dir=str(base))


def marked_line(text: str) -> int:
    """The number of the line carrying the ``# <-`` marker."""
    lines = [i for i, line in enumerate(text.splitlines(), 1) if "# <-" in line]
    assert len(lines) == 1, "mark exactly one line"
    return lines[0]


# -- values and defaults -----------------------------------------------------------


def test_empty_file_gives_defaults() -> None:
    for text in ["", "# only a comment\n", "server:\nllama_server:\naliases:\n"]:
        cfg = parse_config(text, env={})
        assert cfg.server == ServerSettings()
        assert cfg.llama == LlamaSettings()
        assert cfg.aliases.list_models() == []
        assert cfg.source is None


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
    import server_core.config as config_module

    monkeypatch.setattr(config_module, "default_model_path", lambda: None)
    monkeypatch.setattr(config_module, "completion_model_path", lambda: None)
    assert default_config().aliases.list_models() == []
    gguf = tmp_path / "g.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(config_module, "completion_model_path", lambda: str(gguf))
    assert [m["id"] for m in default_config().aliases.list_models()] == ["gemma3:270m"]


def test_full_config_values(base: Path) -> None:
    cfg = parse(
        """
        server:
          listen: "tcp:0:interface=127.0.0.1"
          api_keys: [k1, k2]
          max_body_bytes: 1024
          keepalive_interval: 2.5
          drain_timeout: 0
          upstream: {connect_timeout: 1, header_timeout: 2, idle_timeout: 3}
        llama_server:
          executable: /opt/llama-server
          args: [--threads, 4]
          variants:
            cpu: {args: "-ngl 0"}
            vk: {executable: /opt/llama-server-vulkan, args: [-ngl, 99]}
          max_loaded: 2
          ttl: -1
          start_timeout: 5
          stop_grace: 0
          max_queue: 1
          queue_timeout: 7
          max_concurrent_per_alias: 3
        aliases:
          - alias: mine
            model: models/a.gguf
            request_params: {temperature: 0.2, max_tokens: 16, stop: ["\\n"], top_k: null}
            context_params: --ctx-size 2048 --chat-template "chatml x"
            ttl: 0
            variant: vk
        external:
          - alias: ext
            url: http://127.0.0.1:8080
            model: served-name
            api_key_env: EXT_KEY
            request_params: {seed: 1}
        apis:
          - name: openai
            base_url: https://api.openai.com/v1/
            api_key_env: OPENAI_API_KEY
            models: [gpt-4o-mini]
            prefix: openai/
            forward_all_with_prefix: true
        """,
        base,
        env={"EXT_KEY": "ek", "OPENAI_API_KEY": "ok"},
    )
    assert cfg.server == ServerSettings(
        listen="tcp:0:interface=127.0.0.1",
        api_keys=("k1", "k2"),
        max_body_bytes=1024,
        keepalive_interval=2.5,
        drain_timeout=0.0,
        upstream=UpstreamSettings(1.0, 2.0, 3.0),
    )
    llama = cfg.llama
    assert (llama.executable, llama.args) == ("/opt/llama-server", ("--threads", "4"))
    assert dict(llama.variants) == {
        "cpu": ("/opt/llama-server", ("-ngl", "0")),
        "vk": ("/opt/llama-server-vulkan", ("-ngl", "99")),
    }
    assert (llama.max_loaded, llama.ttl, llama.start_timeout, llama.stop_grace) == (2, -1, 5, 0)
    assert (llama.max_queue, llama.queue_timeout, llama.max_concurrent_per_alias) == (1, 7, 3)
    assert llama.command_for("vk") == ("/opt/llama-server-vulkan", ("-ngl", "99"))
    assert llama.command_for(None) == ("/opt/llama-server", ("--threads", "4"))

    mine = cfg.aliases.resolve("mine")
    assert mine == LocalAlias(
        name="mine",
        model_path=str(base / "models" / "a.gguf"),
        source="user",
        request_params={"temperature": 0.2, "max_tokens": 16, "stop": ["\n"], "top_k": None},
        context_params=("--ctx-size", "2048", "--chat-template", "chatml x"),
        ttl=0.0,
        exec_variant="vk",
    )
    ext = cfg.aliases.resolve("ext")
    assert ext == RemoteTarget(
        name="ext",
        kind="external",
        base_url="http://127.0.0.1:8080/v1",
        api_key="ek",
        upstream_model="served-name",
        request_params={"seed": 1},
    )
    target = cfg.aliases.resolve("openai/anything")
    assert isinstance(target, RemoteTarget)
    assert (target.base_url, target.api_key, target.upstream_model) == (
        "https://api.openai.com/v1",
        "ok",
        "anything",
    )
    assert [m["id"] for m in cfg.aliases.list_models()] == ["mine", "ext", "openai/gpt-4o-mini"]


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


# -- paths and model folders ------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "a.gguf").write_bytes(b"")
    (tmp_path / "conf").mkdir()
    conf = tmp_path / "conf" / "server.yaml"
    conf.write_text("aliases: [{alias: a, model: ../models/a.gguf}]\nmodel_dirs: [../models]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(os.path.relpath(conf, elsewhere))
    assert cfg.source == str(conf)
    assert cfg.aliases.local_aliases()[0].model_path == str(tmp_path / "models" / "a.gguf")
    assert cfg.aliases.list_models()[0]["created"] == int(conf.stat().st_mtime)
    # The same text parsed with file= pointing into conf/ resolves the same way.
    cfg2 = parse_config(conf.read_text(), file=str(conf), env={})
    assert cfg2.aliases.local_aliases()[0].model_path == str(tmp_path / "models" / "a.gguf")


def test_model_dirs_scan(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    for name in [
        "Qwen2.5-0.5B-Q4_K_M.gguf",
        "big-00001-of-00003.gguf",
        "big-00002-of-00003.gguf",
        "big-00003-of-00003.gguf",
        "mmproj-model-f16.gguf",
        "notes.txt",
        "mine.GGUF",
        ".hidden.gguf",
    ]:
        (one / name).write_bytes(b"")
    (one / "folder.gguf").mkdir()
    (two / "qwen2.5-0.5b-q4_k_m.gguf").write_bytes(b"")  # same alias: the first folder wins
    (two / "zeta.gguf").write_bytes(b"")
    (tmp_path / "user.gguf").write_bytes(b"")
    cfg = parse("model_dirs: [one, two]\naliases: [{alias: zeta, model: user.gguf}]\n", tmp_path)
    listed = [(m["id"], m["kind"]) for m in cfg.aliases.list_models()]
    assert listed == [
        ("zeta", "user"),
        ("big", "model"),
        ("mine", "model"),
        ("qwen2.5-0.5b-q4_k_m", "model"),
    ]
    paths = {a.name: a.model_path for a in cfg.aliases.local_aliases()}
    assert paths["big"] == str(one / "big-00001-of-00003.gguf")
    assert paths["qwen2.5-0.5b-q4_k_m"] == str(one / "Qwen2.5-0.5B-Q4_K_M.gguf")
    assert paths["zeta"] == str(tmp_path / "user.gguf")
    assert cfg.aliases.resolve("Qwen2.5-0.5B-Q4_K_M").name == "qwen2.5-0.5b-q4_k_m"


def test_load_config_unreadable(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert (info.value.file, info.value.line) == (missing, None)
    assert "cannot read" in str(info.value)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"server:\n  listen: \xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(bad))


# -- errors, each with its line ----------------------------------------------------

ALIAS_A = "aliases:\n  - alias: a\n    model: models/a.gguf\n"
EXTERNAL_E = "external:\n  - alias: e\n    url: http://h\n"

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
    ("llama_server:\n  ttl: -2  # <-\n", "llama_server.ttl: must be -1 (never stop), 0"),
    ("llama_server:\n  max_loaded: 0  # <-\n", "max_loaded: must be a whole number >= 1"),
    ("llama_server:\n  max_concurrent_per_alias: 0  # <-\n", "must be a whole number >= 1"),
    ("llama_server:\n  args: [--port, 8080]  # <-\n", "server_core sets --port itself"),
    (
        "llama_server:\n  variants:\n    cpu:\n      args:\n"
        "        - -t\n        - --host=0.0.0.0  # <-\n",
        "llama_server.variants.cpu.args: server_core sets --host itself",
    ),
    ("llama_server:\n  variants:\n    cpu: [a]  # <-\n", "variants.cpu: expected a mapping"),
    ("server:\n  listen: a\n  listen: b  # <-\n", "key 'listen' appears twice (first on line 2)"),
    ("server:\n  listen: 1135  # <-\n", "server.listen: expected a Twisted endpoint string"),
    ("server:\n  api_keys: k  # <-\n", "server.api_keys: expected a list, got the string 'k'"),
    ("server:\n  api_keys: [a, '']  # <-\n", "server.api_keys[1]: must not be empty"),
    (
        "server:\n  api_keys: [a]  # <-\n  api_keys_env: KEYS\n",
        "set either api_keys or api_keys_env",
    ),
    ("server:\n  api_keys_env: NO_SUCH_KEYS  # <-\n", "variable NO_SUCH_KEYS is not set"),
    ("server:\n  api_keys_env: EMPTY  # <-\n", "variable EMPTY holds no key"),
    ("server:\n  api_keys_env: not a name  # <-\n", "expected the name of an environment"),
    ("- 1  # <-\n", "the configuration: expected a mapping (key: value), got a list"),
    ("aliases: {alias: a}  # <-\n", "aliases: expected a list, got a mapping"),
    ("aliases:\n  - model: models/a.gguf  # <-\n", "aliases[0]: missing required key 'alias'"),
    (
        "aliases:\n  - alias: a\n    model: models/missing.gguf  # <-\n",
        "alias 'a': model file",
    ),
    ("aliases:\n  - alias: a\n    model: models  # <-\n", "is not a file"),
    (
        ALIAS_A + "    modle: x  # <-\n",
        "unknown key 'modle' (did you mean 'model'?)",
    ),
    (
        ALIAS_A + "  - alias: a  # <-\n    model: models/a.gguf\n",
        "aliases[1] ('a').alias: alias name 'a' is already used on line 2",
    ),
    (
        ALIAS_A + "external:\n  - alias: a  # <-\n    url: http://h\n",
        "alias name 'a' is already used on line 2",
    ),
    ("aliases:\n  - alias: ' a'  # <-\n    model: models/a.gguf\n", "surrounding spaces"),
    (
        ALIAS_A + "    ttl: -5  # <-\n",
        "aliases[0] ('a').ttl: must be -1",
    ),
    (
        ALIAS_A + "    variant: cpu  # <-\n",
        "aliases[0] ('a').variant: no variant 'cpu' (llama_server.variants is empty)",
    ),
    (
        "llama_server: {variants: {vulkan: {}}}\n" + ALIAS_A + "    variant: vulkn  # <-\n",
        "no variant 'vulkn' (did you mean 'vulkan'?)",
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
    ("apis:\n  - name: o\n    base_url: https://x/v1\n    prefix: 3  # <-\n", "like 'openai/'"),
    ("model_dirs: [nowhere]  # <-\n", "model_dirs[0]: model folder"),
    ("model_dirs: [models/a.gguf]  # <-\n", "is not a folder"),
    ("server:\n  listen: 'tcp:1  # <-\n  x: 1\n", "YAML syntax error"),
    ("server:\n\tlisten: x  # <-\n", "YAML syntax error: while scanning for the next token"),
    ("server:\n  listen: [a, b\nllama_server: {}  # <-\n", "YAML syntax error"),
    ("a: 1\n---  # <-\nb: 2\n", "YAML syntax error: expected a single document"),
    ("server: {? [a]: 1}  # <-\n", "server: keys must be strings, got a list"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_error_names_file_and_line(base: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, file="conf.yaml", env={"EMPTY": " , "}, base_dir=str(base))
    err = info.value
    line = marked_line(text)
    assert (err.file, err.line) == ("conf.yaml", line), str(err)
    assert message in err.detail
    assert str(err).startswith(f"conf.yaml:{line}: ")


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


def test_unexpected_exception_still_becomes_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(config_module._Loader, "server", broken)
    with pytest.raises(ConfigError, match="RuntimeError: boom"):
        parse_config("server: {}\n", file="c.yaml", env={})


# -- fuzzing: nothing but ConfigError escapes -----------------------------------------


@given(st.text(max_size=200))
def test_any_text_gives_config_or_config_error(text: str) -> None:
    try:
        parse_config(text, file="fuzz.yaml", env={}, base_dir="/nonexistent-server-core-dir")
    except ConfigError as err:
        assert err.file == "fuzz.yaml"
        assert not str(err).startswith("fuzz.yaml: cannot load"), "the safety net caught a bug"


KEYS = [
    *config_module.TOP_KEYS,
    *config_module.SERVER_KEYS,
    *config_module.LLAMA_KEYS,
    *config_module.API_KEYS,
    *config_module.EXTERNAL_KEYS,
    "alias",
    "variant",
    "context_params",
    "cpu",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 70000)
    | st.floats(allow_nan=True)
    | st.sampled_from(["", "x", "http://h:1", "tcp:1:interface=127.0.0.1", "-1", "--port", "a b"])
)
trees = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.sampled_from(KEYS), trees, max_size=5))
def test_any_structure_gives_config_or_config_error(doc: dict[str, Any]) -> None:
    text = yaml.safe_dump(doc)
    try:
        parse_config(text, file="fuzz.yaml", env={"K": "v"}, base_dir="/nonexistent-dir")
    except ConfigError as err:
        assert err.file == "fuzz.yaml"
        assert not str(err).startswith("fuzz.yaml: cannot load"), "the safety net caught a bug"
        assert err.line is None or 1 <= err.line <= text.count("\n") + 1


# -- examples --------------------------------------------------------------------------


def copy_example(name: str, tmp_path: Path) -> Path:
    shutil.copy(EXAMPLES / name, tmp_path / name)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.gguf").write_bytes(b"GGUF")
    return tmp_path / name


def test_every_example_is_tested() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(EXAMPLE_MODELS)
    assert (EXAMPLES / "README.md").is_file()


EXAMPLE_MODELS = {
    "external.yaml": [("local-llama", "external")],
    "managed.yaml": [("tiny", "user"), ("tiny-creative", "user")],
    "model-dirs.yaml": [("tiny", "model")],
    "api.yaml": [
        ("openai/gpt-4o-mini", "api"),
        ("openai/gpt-4o", "api"),
        ("ollama/llama3.2", "api"),
    ],
}


@pytest.mark.parametrize("name", sorted(EXAMPLE_MODELS))
def test_example_parses(tmp_path: Path, name: str) -> None:
    path = copy_example(name, tmp_path)
    cfg = load_config(str(path), env={"OPENAI_API_KEY": "sk-test"})
    assert [(m["id"], m["kind"]) for m in cfg.aliases.list_models()] == EXAMPLE_MODELS[name]


def test_external_example_points_at_port_8080(tmp_path: Path) -> None:
    ext = load_config(str(copy_example("external.yaml", tmp_path)), env={})
    target = ext.aliases.resolve("local-llama")
    assert isinstance(target, RemoteTarget)
    assert target.base_url == "http://127.0.0.1:8080/v1"
    assert dict(target.request_params) == {"temperature": 0.7}


def test_managed_example_runs_the_fake(tmp_path: Path) -> None:
    cfg = load_config(str(copy_example("managed.yaml", tmp_path)), env={})
    tiny = cfg.aliases.resolve("tiny-creative")
    assert isinstance(tiny, LocalAlias)
    assert tiny.model_path == str(tmp_path / "models" / "tiny.gguf")
    assert cfg.llama.command_for(tiny.exec_variant)[0] == "fake-llama-server"
    assert tiny.context_params == ("--ctx-size", "4096")


def test_api_example_needs_its_key(tmp_path: Path) -> None:
    path = copy_example("api.yaml", tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env={})
    assert "OPENAI_API_KEY" in str(info.value)
    assert info.value.line == 7
    cfg = load_config(str(path), env={"OPENAI_API_KEY": "sk-test"})
    target = cfg.aliases.resolve("openai/gpt-4.1")  # forward_all_with_prefix
    assert isinstance(target, RemoteTarget)
    assert (target.api_key, target.upstream_model) == ("sk-test", "gpt-4.1")
    ollama = cfg.aliases.resolve("ollama/llama3.2")
    assert isinstance(ollama, RemoteTarget) and ollama.api_key is None


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
