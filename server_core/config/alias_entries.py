"""The ``aliases``, ``external`` and ``apis`` lists (and ``model_dirs``) -> the alias store.

An alias name is used once across ``aliases`` and ``external``; a model folder's file
alias may shadow an external one (with a warning) but a user alias wins over both. APIs
have their own names; each model id an API serves (prefix + name) belongs to one API, and
a prefix forwards everything to one API at most.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from twisted.logger import Logger
from yaml.nodes import Node, SequenceNode

from server_core.aliases import ApiAlias, DefaultAliasStore, LocalAlias, RemoteTarget
from server_core.config._values import ConfigReader
from server_core.config._yaml_nodes import NodeMap, line_of, suggest
from server_core.config.model_dirs import scan_model_dirs
from server_core.config.schema import ALIAS_KEYS, API_KEYS, EXTERNAL_KEYS
from server_core.config.settings import LlamaSettings

__all__ = ["read_aliases"]

log = Logger()


def read_aliases(
    reader: ConfigReader,
    top: NodeMap,
    llama: LlamaSettings,
    created: int | None,
    default_model: tuple[str, int | None] | None = None,
) -> DefaultAliasStore:
    """Every alias the top-level mapping ``top`` defines, checked against ``llama``.

    ``default_model``: ``server.default_model`` and its line, which must name a model.
    """
    names = _Names(reader)
    user = [
        _user_alias(reader, m, name, llama, names)
        for m, name in _entries(reader, top.value_node("aliases"), "aliases", ALIAS_KEYS, names)
    ]
    external = [
        _external_target(reader, m, name)
        for m, name in _entries(
            reader, top.value_node("external"), "external", EXTERNAL_KEYS, names
        )
    ]
    apis = _apis(reader, top.value_node("apis"))
    model = scan_model_dirs(reader, top.value_node("model_dirs"))
    user_names = {u.name for u in user}
    for alias in model:
        if alias.name in names.lines and alias.name not in user_names:
            log.warn(
                "model file alias {name!r} hides the external alias of the same name",
                name=alias.name,
            )
    store = DefaultAliasStore(user=user, model=model, external=external, apis=apis, created=created)
    if default_model is None:
        return store
    default, line = default_model
    if default not in store:
        known = [entry["id"] for entry in store.list_models()]
        reader.fail(f"server.default_model: no model '{default}'{suggest(default, known)}", line)
    return DefaultAliasStore(
        user=user,
        model=model,
        external=external,
        apis=apis,
        created=store.created,
        default_model=default,
    )


class _Names:
    """Explicit alias names -> the line that claimed them, across aliases and external."""

    def __init__(self, reader: ConfigReader) -> None:
        self.reader = reader
        self.lines: dict[str, int] = {}

    def claim(self, name: str, node: Node, path: str) -> None:
        """Take ``name`` for the entry at ``node``; a name taken before is an error."""
        if name in self.lines:
            self.reader.fail(
                f"{path}: alias name '{name}' is already used on line {self.lines[name]}", node
            )
        self.lines[name] = line_of(node)


def _named_entry(
    reader: ConfigReader, item: Node, where: str, keys: tuple[str, ...], name_key: str
) -> tuple[NodeMap, str]:
    """One list entry as a mapping, and its name; messages then say ``where ('name')``."""
    m = reader.mapping(item, where, keys)
    name = m.require(name_key, reader.alias_name)
    m.path = f"{where} ('{name}')"
    return m, name


def _entries(
    reader: ConfigReader, node: Node | None, section: str, keys: tuple[str, ...], names: _Names
) -> Iterator[tuple[NodeMap, str]]:
    """The entries of ``aliases`` or ``external``, each name claimed once.

    A generator, so that each entry is checked in full before the next one is read and
    the first mistake in the file is the one reported.
    """
    for i, item in enumerate(reader.sequence(node, section) if node else []):
        m, name = _named_entry(reader, item, f"{section}[{i}]", keys, "alias")
        names.claim(name, m.pairs["alias"][1], f"{m.path}.alias")
        yield m, name


def _user_alias(
    reader: ConfigReader, m: NodeMap, name: str, llama: LlamaSettings, names: _Names
) -> LocalAlias:
    """An ``aliases`` entry: a model file served by a managed llama-server."""
    model_path = m.require("model", reader.path)
    if not os.path.isfile(model_path):
        what = "is not a file" if os.path.exists(model_path) else "does not exist"
        reader.fail(f"alias '{name}': model file {model_path} {what}", m.line("model"))
    variant = m.get("variant", reader.opt_string, None)
    if variant is not None and variant not in llama.variants:
        known = sorted(llama.variants)
        hint = suggest(variant, known) if known else " (llama_server.variants is empty)"
        reader.fail(f"{m.path}.variant: no variant '{variant}'{hint}", m.line("variant"))
    return LocalAlias(
        name=name,
        model_path=model_path,
        source="user",
        request_params=m.get("request_params", reader.request_params, {}),
        context_params=m.get("context_params", reader.flags, ()),
        ttl=m.get("ttl", reader.opt_ttl, None),
        exec_variant=variant,
        priority=m.get("priority", reader.integer, 0),
        names=_extra_names(reader, m, names),
    )


def _extra_names(reader: ConfigReader, m: NodeMap, names: _Names) -> tuple[str, ...]:
    """An alias's ``names``: more names for the same process, each claimed like an alias."""
    node = m.value_node("names")
    if node is None:
        return ()
    extra: tuple[str, ...] = m.get("names", reader.string_list, ())
    items = reader.sequence(node, f"{m.path}.names")
    for j, (value, item) in enumerate(zip(extra, items, strict=True)):
        reader.alias_name(item, f"{m.path}.names[{j}]")
        names.claim(value, item, f"{m.path}.names[{j}]")
    return extra


def _external_target(reader: ConfigReader, m: NodeMap, name: str) -> RemoteTarget:
    """An ``external`` entry: one model on an OpenAI-compatible server (its ``/v1`` root)."""
    parts = m.require("url", reader.url)
    url_path = parts.path.rstrip("/")
    if not url_path.endswith("/v1"):
        url_path += "/v1"
    api_key = reader.api_key(m)
    return RemoteTarget(
        name=name,
        kind="external",
        base_url=f"{parts.scheme}://{parts.netloc}{url_path}",
        api_key=api_key,
        upstream_model=m.get("model", reader.opt_string, None),
        request_params=m.get("request_params", reader.request_params, {}),
    )


# -- apis ------------------------------------------------------------------------------


class _ApiClaims:
    """What the APIs listed so far took: their names, model ids and forwarding prefixes."""

    def __init__(self, reader: ConfigReader) -> None:
        self.reader = reader
        self.names: dict[str, int | None] = {}
        self.model_ids: dict[str, tuple[str, int]] = {}
        self.prefixes: dict[str, tuple[str, int | None]] = {}

    def name(self, m: NodeMap, name: str) -> None:
        """Take an API's name; two APIs may not share one."""
        if name in self.names:
            self.reader.fail(
                f"{m.path}.name: API name '{name}' is already used on line {self.names[name]}",
                m.line("name"),
            )
        self.names[name] = m.line("name")

    def prefix(self, m: NodeMap, name: str, prefix: str) -> None:
        """Take a forward-all prefix: one API at most forwards everything under it."""
        if prefix in self.prefixes:
            other, line = self.prefixes[prefix]
            self.reader.fail(
                f"{m.path}.prefix: '{prefix}' already forwards to API '{other}' (line {line})",
                m.line("prefix"),
            )
        self.prefixes[prefix] = (name, m.line("prefix"))

    def models(self, m: NodeMap, name: str, prefix: str, models: tuple[str, ...]) -> None:
        """Take the model ids (prefix + name) an API lists; each id has one API."""
        mnode = m.value_node("models")
        for j, upstream in enumerate(models):
            model_id = prefix + upstream
            assert isinstance(mnode, SequenceNode)
            line = line_of(mnode.value[j])
            if model_id in self.model_ids:
                other, first = self.model_ids[model_id]
                self.reader.fail(
                    f"{m.path}.models[{j}]: '{model_id}' is already served by API '{other}' "
                    f"(line {first}); give one of them a prefix",
                    line,
                )
            self.model_ids[model_id] = (name, line)


def _apis(reader: ConfigReader, node: Node | None) -> list[ApiAlias]:
    """The ``apis`` entries: OpenAI-compatible services and the models they serve."""
    claims = _ApiClaims(reader)
    out: list[ApiAlias] = []
    for i, item in enumerate(reader.sequence(node, "apis") if node else []):
        m, name = _named_entry(reader, item, f"apis[{i}]", API_KEYS, "name")
        claims.name(m, name)
        out.append(_api(reader, m, name, claims))
    return out


def _api(reader: ConfigReader, m: NodeMap, name: str, claims: _ApiClaims) -> ApiAlias:
    """One ``apis`` entry: where it is, its key, and which model ids it serves."""
    parts = m.require("base_url", reader.url)
    api_key = reader.api_key(m)
    prefix = m.get("prefix", reader.prefix, "")
    forward_all = m.get("forward_all_with_prefix", reader.boolean, False)
    models: tuple[str, ...] = m.get("models", reader.string_list, ())
    if forward_all and not prefix:
        reader.fail(
            f"{m.path}.forward_all_with_prefix: needs a prefix (like 'openai/')",
            m.line("forward_all_with_prefix"),
        )
    if not models and not forward_all:
        reader.fail(
            f"{m.path}: lists no models; add 'models: [...]' "
            "or set a prefix and 'forward_all_with_prefix: true'",
            m.line("models") if "models" in m.pairs else m.node,
        )
    if forward_all:
        claims.prefix(m, name, prefix)
    claims.models(m, name, prefix, models)
    return ApiAlias(
        name=name,
        base_url=parts.geturl().rstrip("/"),
        api_key=api_key,
        models=models,
        prefix=prefix,
        forward_all_with_prefix=forward_all,
        request_params=m.get("request_params", reader.request_params, {}),
    )
