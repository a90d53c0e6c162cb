"""Reading a configuration: ``load_config(path)`` / ``parse_config(text)`` -> ``Config``.

Everything that goes wrong is raised as ``ConfigError`` naming the file and line (never
a traceback): unknown keys (with a "did you mean"), wrong types, bad values, YAML syntax
errors, duplicate names, missing model files and missing environment variables. The
file's layout is in ``schema``; this module reads the ``server`` and ``llama_server``
sections itself and leaves the alias lists to ``alias_entries``. Relative paths resolve
against the folder of the configuration file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from types import MappingProxyType

from yaml.nodes import Node

from server_core.aliases import DefaultAliasStore, LocalAlias
from server_core.config._values import ConfigReader
from server_core.config._yaml_nodes import NodeMap, is_null
from server_core.config.alias_entries import read_aliases
from server_core.config.browser_values import allowed_host_entries, cors_origin_entries
from server_core.config.schema import (
    LLAMA_KEYS,
    OLLAMA_KEYS,
    SERVER_KEYS,
    TOP_KEYS,
    UPSTREAM_KEYS,
    VARIANT_KEYS,
)
from server_core.config.settings import (
    DEFAULT_EXECUTABLE,
    Config,
    LlamaSettings,
    OllamaSettings,
    ServerSettings,
    UpstreamSettings,
)
from server_core.errors import ConfigError, ServerCoreError

__all__ = ["load_config", "parse_config"]


def load_config(path: str, *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the YAML file at ``path``."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
        created = int(os.stat(path).st_mtime)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the file is not UTF-8 text ({exc.reason})", file=path) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the configuration file: {exc.strerror or exc}", file=path
        ) from None
    return _parse(text, file=path, env=env, base_dir=None, created=created, source=path)


def parse_config(
    text: str,
    *,
    file: str = "<config>",
    env: Mapping[str, str] | None = None,
    base_dir: str | None = None,
) -> Config:
    """Validate YAML ``text``; ``file`` is used in messages and to resolve relative paths.

    ``env`` replaces ``os.environ`` for ``api_key_env`` / ``api_keys_env``. Relative
    paths resolve against ``base_dir``, else the folder of ``file`` when ``file`` is a
    path, else the current directory.
    """
    source = None if file.startswith("<") else file
    return _parse(text, file=file, env=env, base_dir=base_dir, created=None, source=source)


def _parse(
    text: str,
    *,
    file: str,
    env: Mapping[str, str] | None,
    base_dir: str | None,
    created: int | None,
    source: str | None,
) -> Config:
    if base_dir is None:
        base_dir = os.getcwd() if file.startswith("<") else os.path.dirname(os.path.abspath(file))
    reader = ConfigReader(file=file, env=os.environ if env is None else env, base_dir=base_dir)
    try:
        return _read(reader, text, created=created, source=source and os.path.abspath(source))
    except ConfigError:
        raise
    except Exception as exc:
        # A bug of ours must still not show the operator a traceback.
        raise ConfigError(
            f"cannot load the configuration ({type(exc).__name__}: {exc})", file=file
        ) from exc


def _read(reader: ConfigReader, text: str, *, created: int | None, source: str | None) -> Config:
    """The document's sections, in the order their mistakes are reported."""
    root = reader.compose(text)
    if root is None:
        return Config(aliases=DefaultAliasStore(created=created), source=source)
    top = reader.mapping(root, "", TOP_KEYS)
    server = _server_settings(reader, top.value_node("server"))
    llama = _llama_settings(reader, top.value_node("llama_server"))
    ollama = _ollama_settings(reader, top.value_node("ollama"))
    default = None
    if server.default_model is not None:
        smap = reader.mapping(top.value_node("server"), "server", SERVER_KEYS)
        default = (server.default_model, smap.line("default_model"))
    store = read_aliases(reader, top, llama, created, default)
    _check_preload(reader, top.value_node("llama_server"), llama, store)
    return Config(server=server, llama=llama, ollama=ollama, aliases=store, source=source)


_OLLAMA_VERSION = re.compile(r"\d{1,4}(\.\d{1,4}){1,3}")


def _ollama_settings(reader: ConfigReader, node: Node | None) -> OllamaSettings:
    """The ``ollama`` section; absent keys keep ``OllamaSettings``' defaults."""
    m = reader.mapping(node, "ollama", OLLAMA_KEYS)
    d = OllamaSettings()
    version = m.get("version", reader.string, d.version)
    if not _OLLAMA_VERSION.fullmatch(version):
        reader.fail(
            f"ollama.version: expected a version such as 0.12.3 (clients compare it), "
            f"got {version!r}",
            m.line("version"),
        )
    cap = m.get("max_keep_alive", reader.positive, 0.0) or d.max_keep_alive
    return OllamaSettings(version=version, max_keep_alive=cap)


def _check_preload(
    reader: ConfigReader, node: Node | None, llama: LlamaSettings, store: DefaultAliasStore
) -> None:
    """Each ``preload`` name is a managed model (a remote one has nothing to start)."""
    if not llama.preload:
        return
    m = reader.mapping(node, "llama_server", LLAMA_KEYS)
    managed = {alias.name for alias in store.local_aliases()}
    for name in llama.preload:
        try:
            target = store.resolve(name)
        except ServerCoreError:
            target = None
        if not isinstance(target, LocalAlias):
            reader.fail(
                f"llama_server.preload: {name!r} is not a managed model "
                f"(managed: {', '.join(sorted(managed)) or 'none'})",
                m.line("preload"),
            )


def _server_settings(reader: ConfigReader, node: Node | None) -> ServerSettings:
    """The ``server`` section; absent keys keep ``ServerSettings``' defaults."""
    m = reader.mapping(node, "server", SERVER_KEYS)
    d = ServerSettings()
    if m.value_node("api_keys") is not None and m.value_node("api_keys_env") is not None:
        reader.fail("server: set either api_keys or api_keys_env, not both", m.line("api_keys"))
    api_keys = m.get("api_keys", reader.string_list, d.api_keys)
    api_keys = m.get("api_keys_env", reader.api_keys_from_env, api_keys)
    upstream = reader.mapping(m.value_node("upstream"), "server.upstream", UPSTREAM_KEYS)
    return ServerSettings(
        listen=m.get("listen", reader.listen, d.listen),
        api_keys=api_keys,
        max_body_bytes=m.get("max_body_bytes", reader.count(1), d.max_body_bytes),
        keepalive_interval=m.get("keepalive_interval", reader.positive, d.keepalive_interval),
        drain_timeout=m.get("drain_timeout", reader.non_negative, d.drain_timeout),
        allowed_hosts=m.get(
            "allowed_hosts", lambda n, p: allowed_host_entries(reader, n, p), d.allowed_hosts
        ),
        cors_origins=m.get(
            "cors_origins", lambda n, p: cors_origin_entries(reader, n, p), d.cors_origins
        ),
        allow_unauthenticated=m.get(
            "allow_unauthenticated", reader.boolean, d.allow_unauthenticated
        ),
        default_model=m.get("default_model", reader.opt_string, d.default_model),
        upstream=_upstream_settings(reader, upstream),
        metrics_public=m.get("metrics_public", reader.boolean, d.metrics_public),
        node_name=m.get("node_name", lambda n, p: _node_name(reader, n, p), d.node_name),
        json_logs=m.get("json_logs", reader.boolean, d.json_logs),
        access_log=m.get("access_log", reader.boolean, d.access_log),
    )


_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def _node_name(reader: ConfigReader, node: Node, path: str) -> str:
    """A name fit for a header value and a metrics label: letters, digits, ``.``, ``_``, ``-``."""
    name = reader.string(node, path)
    if not _NODE_NAME.fullmatch(name):
        reader.fail(
            f"{path}: expected a node name of up to 63 letters, digits, '.', '_' or '-' "
            f"(starting with a letter or digit), got {name!r}",
            node,
        )
    return name


def _upstream_settings(reader: ConfigReader, m: NodeMap) -> UpstreamSettings:
    d = UpstreamSettings()
    return UpstreamSettings(
        connect_timeout=m.get("connect_timeout", reader.positive, d.connect_timeout),
        header_timeout=m.get("header_timeout", reader.positive, d.header_timeout),
        idle_timeout=m.get("idle_timeout", reader.positive, d.idle_timeout),
        max_header_bytes=m.get("max_header_bytes", reader.count(1), d.max_header_bytes),
        max_headers=m.get("max_headers", reader.count(1), d.max_headers),
    )


def _llama_settings(reader: ConfigReader, node: Node | None) -> LlamaSettings:
    """The ``llama_server`` section; absent keys keep ``LlamaSettings``' defaults."""
    m = reader.mapping(node, "llama_server", LLAMA_KEYS)
    d = LlamaSettings()
    executable = m.get("executable", reader.opt_string, d.executable)
    args = m.get("args", reader.flags, d.args)
    variants = _variants(reader, m.value_node("variants"), executable)
    return LlamaSettings(
        executable=executable,
        args=args,
        variants=MappingProxyType(variants),
        max_loaded=m.get("max_loaded", reader.count(1), d.max_loaded),
        ttl=m.get("ttl", reader.ttl, d.ttl),
        start_timeout=m.get("start_timeout", reader.positive, d.start_timeout),
        stop_grace=m.get("stop_grace", reader.non_negative, d.stop_grace),
        liveness_interval=m.get("liveness_interval", reader.non_negative, d.liveness_interval),
        liveness_timeout=m.get("liveness_timeout", reader.positive, d.liveness_timeout),
        liveness_misses=m.get("liveness_misses", reader.count(0), d.liveness_misses),
        max_queue=m.get("max_queue", reader.count(1), d.max_queue),
        queue_timeout=m.get("queue_timeout", reader.positive, d.queue_timeout),
        max_concurrent_per_alias=m.get(
            "max_concurrent_per_alias",
            lambda n, p: None if is_null(n) else reader.count(1)(n, p),
            d.max_concurrent_per_alias,
        ),
        max_wait=m.get("max_wait", reader.non_negative, d.max_wait),
        min_resident=m.get("min_resident", reader.non_negative, d.min_resident),
        preload=m.get("preload", reader.string_list, d.preload),
        child_metrics=m.get("child_metrics", reader.boolean, d.child_metrics),
    )


def _variants(
    reader: ConfigReader, node: Node | None, executable: str | None
) -> dict[str, tuple[str, tuple[str, ...]]]:
    """``llama_server.variants``: name -> (executable, args)."""
    variants: dict[str, tuple[str, tuple[str, ...]]] = {}
    if node is None:
        return variants
    vm = reader.mapping(node, "llama_server.variants", None)
    for name, (_key_node, value) in vm.pairs.items():
        v = reader.mapping(value, f"llama_server.variants.{name}", VARIANT_KEYS)
        # A variant without its own executable runs the default one with other args.
        v_exe = v.get("executable", reader.opt_string, None) or executable
        variants[name] = (v_exe or DEFAULT_EXECUTABLE, v.get("args", reader.flags, ()))
    return variants
