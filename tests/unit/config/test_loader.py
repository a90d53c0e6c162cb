"""Loading a whole configuration: values, defaults, files, the safety net, fuzzing, examples."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from server_core.aliases import LocalAlias, RemoteTarget
from server_core.config import (
    LlamaSettings,
    ServerSettings,
    UpstreamSettings,
    load_config,
    parse_config,
    schema,
)
from server_core.config import loader as loader_module
from server_core.errors import ConfigError
from tests.unit.config.support import assert_error_at_marked_line, parse


def test_empty_file_gives_defaults() -> None:
    for text in ["", "# only a comment\n", "server:\nllama_server:\naliases:\n"]:
        cfg = parse_config(text, env={})
        assert cfg.server == ServerSettings()
        assert cfg.llama == LlamaSettings()
        assert cfg.aliases.list_models() == []
        assert cfg.source is None


FULL_CONFIG = """
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
        """


def test_full_config_values(base: Path) -> None:
    cfg = parse(FULL_CONFIG, base, env={"EXT_KEY": "ek", "OPENAI_API_KEY": "ok"})
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


def test_unexpected_exception_still_becomes_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(loader_module, "_server_settings", broken)
    with pytest.raises(ConfigError, match="RuntimeError: boom"):
        parse_config("server: {}\n", file="c.yaml", env={})


@given(st.text(max_size=200))
def test_any_text_gives_config_or_config_error(text: str) -> None:
    try:
        parse_config(text, file="fuzz.yaml", env={}, base_dir="/nonexistent-server-core-dir")
    except ConfigError as err:
        assert err.file == "fuzz.yaml"
        assert not str(err).startswith("fuzz.yaml: cannot load"), "the safety net caught a bug"


KEYS = [
    *schema.TOP_KEYS,
    *schema.SERVER_KEYS,
    *schema.LLAMA_KEYS,
    *schema.API_KEYS,
    *schema.EXTERNAL_KEYS,
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


EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


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


# -- errors, each with its line ----------------------------------------------------

ERRORS: list[tuple[str, str]] = [
    (
        "server:\n  api_keys: [a]  # <-\n  api_keys_env: KEYS\n",
        "set either api_keys or api_keys_env",
    ),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_error_names_file_and_line(base: Path, text: str, message: str) -> None:
    assert_error_at_marked_line(base, text, message)
