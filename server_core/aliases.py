"""Alias model and lookup: which model name goes where.

Four kinds of names a client may put in ``model``:

- user aliases: configured by name, served by a managed llama-server (``LocalAlias``);
- model aliases: every GGUF file found in a model folder (``LocalAlias``, source "model");
- external aliases: a llama-server / OpenAI-compatible server someone else runs
  (``RemoteTarget`` of kind "external");
- API aliases: a remote API with a list of models and an optional prefix
  (``ApiAlias``; resolving yields a ``RemoteTarget`` of kind "api").

Lookup order is user -> model -> external -> API (exact id, then prefix). The store is
pure data: loading and validating YAML lives in ``server_core.config``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeAlias

from zope.interface import implementer

from server_core.errors import AliasNotFound
from server_core.interfaces import IAliasStore

__all__ = [
    "ApiAlias",
    "DefaultAliasStore",
    "LocalAlias",
    "RemoteTarget",
    "Resolved",
    "merge_request_params",
]

OWNER = "server_core"


def _frozen_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    # A private deep copy behind a read-only view: nobody can change an alias's
    # defaults after loading, not even through a nested list or dict.
    return MappingProxyType(copy.deepcopy(dict(value)))


@dataclass(frozen=True)
class LocalAlias:
    """A name served by a managed llama-server process (spawned by server_core)."""

    name: str
    """What clients put in ``model``."""
    model_path: str
    """The GGUF file (absolute once loaded from a config)."""
    source: str
    """``"user"`` (a configured alias) or ``"model"`` (a GGUF found in a model folder)."""
    request_params: Mapping[str, Any] = field(hash=False)
    """Request defaults, filled only where the client did not set the key."""
    context_params: tuple[str, ...] = ()
    """Extra llama-server flags, already tokenised (``("--ctx-size", "2048")``)."""
    ttl: float | None = None
    """Idle TTL override in seconds (-1 never, 0 right away); None = the global TTL."""
    exec_variant: str | None = None
    """Name of a llama-server executable variant (``llama_server.variants``)."""
    priority: int = 0
    """Scheduling priority: a waiting request for it may swap out a loaded model of lower
    priority without waiting ``max_wait`` (see ``shared_context.context``)."""
    names: tuple[str, ...] = ()
    """Extra names clients may use (``gpt-4o-mini``): each resolves to this very alias, so
    every name shares one llama-server; the scheduler keys its slots by ``name``."""

    def __post_init__(self) -> None:
        if self.source not in ("user", "model"):
            raise ValueError(f"LocalAlias.source must be 'user' or 'model', not {self.source!r}")
        object.__setattr__(self, "request_params", _frozen_mapping(self.request_params))
        object.__setattr__(self, "context_params", tuple(self.context_params))
        object.__setattr__(self, "names", tuple(self.names))


@dataclass(frozen=True)
class RemoteTarget:
    """A server someone else runs: an external llama-server / OpenAI-compatible, or an API."""

    name: str
    """Alias name (external) or API name."""
    kind: str
    """``"external"`` or ``"api"``."""
    base_url: str
    """The "v1 root": endpoint paths such as ``/chat/completions`` are appended to it."""
    api_key: str | None = field(repr=False)
    """Read from the configured environment variable at load time; never printed."""
    upstream_model: str | None
    """Value to put in ``model`` when forwarding (None = keep the client's)."""
    request_params: Mapping[str, Any] = field(hash=False)

    def __post_init__(self) -> None:
        if self.kind not in ("external", "api"):
            raise ValueError(f"RemoteTarget.kind must be 'external' or 'api', not {self.kind!r}")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        object.__setattr__(self, "request_params", _frozen_mapping(self.request_params))


@dataclass(frozen=True)
class ApiAlias:
    """A remote API: the models it serves under our names, and how to reach it."""

    name: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    models: tuple[str, ...] = ()
    """Upstream model names; clients ask for ``prefix + name``."""
    prefix: str = ""
    forward_all_with_prefix: bool = False
    """Send any ``prefix...`` model here, listed in ``models`` or not."""
    request_params: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.forward_all_with_prefix and not self.prefix:
            raise ValueError("forward_all_with_prefix needs a non-empty prefix")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "request_params", _frozen_mapping(self.request_params))

    def model_ids(self) -> tuple[str, ...]:
        """The ids clients use: each listed model with the prefix in front."""
        return tuple(self.prefix + m for m in self.models)

    def target(self, client_model: str) -> RemoteTarget:
        """The route for ``client_model`` (which must carry the prefix, if any)."""
        return RemoteTarget(
            name=self.name,
            kind="api",
            base_url=self.base_url,
            api_key=self.api_key,
            upstream_model=client_model[len(self.prefix) :],
            request_params=self.request_params,
        )


Resolved: TypeAlias = LocalAlias | RemoteTarget
"""What ``IAliasStore.resolve`` returns."""


def merge_request_params(body: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """A new request body: ``body`` plus every default whose key ``body`` lacks.

    A key the client sent counts as set even when its value is ``null``: an explicit
    null is a choice (OpenAI reads ``"max_tokens": null`` as "no limit"), so a default
    must not overwrite it. Nested objects are not merged: a client's ``{"a": {...}}``
    replaces the default ``a`` whole. ``body`` and ``defaults`` are left untouched;
    default values are deep-copied so the result can be changed freely.
    """
    merged = dict(body)
    for key, value in defaults.items():
        if key not in merged:
            merged[key] = copy.deepcopy(value)
    return merged


@implementer(IAliasStore)
class DefaultAliasStore:
    """Lookup over user, model-file, external and API aliases.

    Within one kind names must be unique (``ValueError`` otherwise: the config loader
    reports duplicates with their line first). Across kinds the lookup order decides,
    and a shadowed name is neither listed nor returned by ``local_aliases``.
    """

    def __init__(
        self,
        user: Iterable[LocalAlias] = (),
        model: Iterable[LocalAlias] = (),
        external: Iterable[RemoteTarget] = (),
        apis: Iterable[ApiAlias] = (),
        *,
        created: int | None = None,
        default_model: str | None = None,
    ) -> None:
        self._user = _by_name(user, "user alias")
        # Extra names of user aliases -> the alias itself (one object, one process).
        self._extra: dict[str, LocalAlias] = {}
        for alias in self._user.values():
            for extra in alias.names:
                if extra in self._user or extra in self._extra:
                    raise ValueError(f"alias name {extra!r} is used twice")
                self._extra[extra] = alias
        # Model aliases are listed by name; a user alias of the same name wins.
        self._model = {
            name: alias
            for name, alias in sorted(_by_name(model, "model alias").items())
            if name not in self._user
        }
        self._external = _by_name(external, "external alias")
        self._apis: tuple[ApiAlias, ...] = tuple(apis)
        names = [a.name for a in self._apis]
        if len(set(names)) != len(names):
            raise ValueError("duplicate API name")
        for alias in self._user.values():
            if alias.source != "user":
                raise ValueError(f"user alias {alias.name!r} has source {alias.source!r}")
        for alias in self._model.values():
            if alias.source != "model":
                raise ValueError(f"model alias {alias.name!r} has source {alias.source!r}")
        for target in self._external.values():
            if target.kind != "external":
                raise ValueError(f"external alias {target.name!r} has kind {target.kind!r}")
        self._api_exact: dict[str, ApiAlias] = {}
        for api in self._apis:
            for model_id in api.model_ids():
                # The first API listing an id gets it, in config order.
                self._api_exact.setdefault(model_id, api)
        # Longest prefix first, so "openai/azure/" beats "openai/"; config order breaks ties.
        self._api_prefixes = sorted(
            (a for a in self._apis if a.forward_all_with_prefix),
            key=lambda a: -len(a.prefix),
        )
        self.created = int(time.time()) if created is None else created
        if default_model is not None and self._find(default_model) is None:
            raise ValueError(f"default model {default_model!r} is not an alias")
        self._default = default_model

    def __repr__(self) -> str:
        return (
            f"<DefaultAliasStore user={list(self._user)} model={list(self._model)} "
            f"external={list(self._external)} apis={[a.name for a in self._apis]}>"
        )

    # -- IAliasStore ---------------------------------------------------------------

    def resolve(self, model: str) -> Resolved:
        """The route for a client's ``model``; ``AliasNotFound`` when none."""
        if not isinstance(model, str):
            raise AliasNotFound(str(model))
        found = self._find(model)
        if found is None:
            raise AliasNotFound(model)
        return found

    def list_models(self) -> list[dict[str, Any]]:
        """``/v1/models`` entries: user, model, external, then API models; each id once."""
        entries: list[dict[str, Any]] = []
        seen: set[str] = set()

        def add(model_id: str, owner: str, kind: str) -> None:
            if model_id in seen:
                return
            seen.add(model_id)
            entries.append(
                {
                    "id": model_id,
                    "object": "model",
                    "created": self.created,
                    "owned_by": owner,
                    "kind": kind,
                }
            )

        for name, alias in self._user.items():
            add(name, OWNER, "user")
            for extra in alias.names:
                add(extra, OWNER, "user")
        for name in self._model:
            add(name, OWNER, "model")
        for name in self._external:
            add(name, OWNER, "external")
        for api in self._apis:
            for model_id in api.model_ids():
                # Listed only where resolve() would really send it to this API.
                found = self._find(model_id)
                if isinstance(found, RemoteTarget) and found.kind == "api":
                    if found.name == api.name:
                        add(model_id, api.name, "api")
        return entries

    def default_model(self) -> str | None:
        """The name that serves requests naming no model: the configured default, else
        the only alias when exactly one exists (extra names count as that one), else None.
        """
        if self._default is not None:
            return self._default
        if self._api_prefixes:
            return None  # a prefix serves an open set of names
        names = [*self._user, *self._model, *self._external, *self._api_exact]
        return names[0] if len(names) == 1 else None

    def local_aliases(self) -> list[LocalAlias]:
        """Every alias served by a managed llama-server: user aliases, then model files."""
        return [*self._user.values(), *self._model.values()]

    # -- extras --------------------------------------------------------------------

    def remote_targets(self) -> list[RemoteTarget]:
        """The external aliases (API targets are made per model on ``resolve``)."""
        return list(self._external.values())

    def apis(self) -> list[ApiAlias]:
        return list(self._apis)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self._find(model) is not None

    def _find(self, model: str) -> Resolved | None:
        alias: Resolved | None = self._user.get(model) or self._extra.get(model)
        if alias is not None:
            return alias
        # Model aliases are lower-cased file stems: match them regardless of case.
        alias = self._model.get(model) or self._model.get(model.lower())
        if alias is not None:
            return alias
        alias = self._external.get(model)
        if alias is not None:
            return alias
        api = self._api_exact.get(model)
        if api is not None:
            return api.target(model)
        for api in self._api_prefixes:
            if model.startswith(api.prefix) and len(model) > len(api.prefix):
                return api.target(model)
        return None


def _by_name(items: Iterable[Any], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if item.name in out:
            raise ValueError(f"duplicate {what} {item.name!r}")
        out[item.name] = item
    return out
