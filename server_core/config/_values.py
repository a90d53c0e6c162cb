"""The configuration's own kinds of value, on top of the generic ``NodeReader`` checks.

Each method is a check ``(node, path) -> value`` that ``NodeMap.get`` takes: an idle TTL,
llama-server flags (parsed now, so a bad flag is a line in the file rather than a failed
first request), request parameter defaults, upstream URLs, file paths relative to the
configuration's folder, alias names, the listening endpoint, and keys read from the
environment.
"""

from __future__ import annotations

import os
import re
import shlex
import urllib.parse
from collections.abc import Mapping
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode

from server_core.config._yaml_nodes import (
    STR_TAG,
    NodeMap,
    NodeReader,
    describe,
    is_null,
    line_of,
)
from server_core.config.endpoints import ENDPOINT_EXAMPLE, endpoint_problem, looks_like_endpoint
from server_core.config.schema import MANAGED_FLAGS, RESERVED_REQUEST_PARAMS
from server_core.flags import FlagError, flag_key, parse_flags

__all__ = ["ConfigReader"]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MANAGED_KEYS = frozenset(flag_key(f) for f in MANAGED_FLAGS)


class ConfigReader(NodeReader):
    """Checks for configuration values; ``env`` and ``base_dir`` are where names resolve."""

    def __init__(self, *, file: str, env: Mapping[str, str], base_dir: str) -> None:
        super().__init__(file=file)
        self.env = env
        self.base_dir = base_dir

    def ttl(self, node: Node, path: str) -> float:
        """Idle seconds before a server stops: -1 never, 0 at once, or more than 0."""
        value = self.number(node, path)
        if value < 0 and value != -1:
            self.fail(
                f"{path}: must be -1 (never stop), 0 (stop right after the last request) "
                f"or a number of seconds > 0, got {value:g}",
                node,
            )
        return value

    def opt_ttl(self, node: Node, path: str) -> float | None:
        """A TTL, or None for ``null`` (use the llama_server one)."""
        return None if is_null(node) else self.ttl(node, path)

    # -- llama-server flags ----------------------------------------------------------

    def flags(self, node: Node, path: str) -> tuple[str, ...]:
        """Command-line flags: a list (numbers allowed) or one string split like a shell."""
        if is_null(node):
            return ()
        tokens, lines = self._flag_tokens(node, path)
        for token, line in zip(tokens, lines, strict=True):
            flag = token.split("=", 1)[0]
            if flag in MANAGED_FLAGS:
                self._managed_flag(path, flag, line)
        # Parse them as llama-server would now, so a bad flag is a line in the config
        # instead of a failure on the first request for the model.
        first: Node | int = lines[0] if lines else node
        try:
            parsed = parse_flags(tokens)
        except FlagError as exc:
            self.fail(f"{path}: {exc}", first)
        for parsed_flag in parsed:
            if parsed_flag.key in _MANAGED_KEYS:
                self._managed_flag(path, parsed_flag.name, first)
        return tokens

    def _flag_tokens(self, node: Node, path: str) -> tuple[tuple[str, ...], list[int]]:
        """The flag tokens and the line each came from."""
        if isinstance(node, ScalarNode) and node.tag == STR_TAG:
            try:
                tokens = tuple(shlex.split(str(node.value)))
            except ValueError as exc:
                self.fail(f"{path}: cannot split into flags: {exc}", node)
            return tokens, [line_of(node)] * len(tokens)
        items = self.sequence(node, path)
        values = []
        for i, item in enumerate(items):
            value = self.scalar(item, f"{path}[{i}]") if isinstance(item, ScalarNode) else None
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                self.fail(f"{path}[{i}]: expected a string or a number, got {describe(item)}", item)
            values.append(str(value))
        return tuple(values), [line_of(item) for item in items]

    def _managed_flag(self, path: str, flag: str, where: Node | int) -> None:
        self.fail(
            f"{path}: server_core sets {flag} itself (port, host, model file and alias); remove it",
            where,
        )

    # -- requests and upstreams ------------------------------------------------------

    def request_params(self, node: Node, path: str) -> dict[str, Any]:
        """Default request fields (JSON-like), none of which decides what a request is."""
        if is_null(node):
            return {}
        if not isinstance(node, MappingNode):
            self.fail(f"{path}: expected a mapping of request fields, got {describe(node)}", node)
        params: dict[str, Any] = self.plain(node, path)
        for key, (key_node, _v) in self.pairs(node, path).items():
            if key in RESERVED_REQUEST_PARAMS:
                self.fail(
                    f"{path}: '{key}' cannot have a default (it decides what the request is)",
                    key_node,
                )
        return params

    def url(self, node: Node, path: str) -> urllib.parse.SplitResult:
        """An http(s) URL with a host, no credentials, no query and no fragment."""
        text = self.string(node, path).strip()
        example = "like http://127.0.0.1:8080"
        try:
            parts = urllib.parse.urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            self.fail(f"{path}: not a valid URL ({exc}); write it {example}", node)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.fail(f"{path}: must be an http:// or https:// URL with a host, {example}", node)
        if parts.username is not None or parts.password is not None:
            self.fail(f"{path}: do not put credentials in the URL; use api_key_env", node)
        if parts.query or parts.fragment:
            self.fail(f"{path}: remove the '?...' / '#...' part of the URL", node)
        return parts

    def prefix(self, node: Node, path: str) -> str:
        """A model-name prefix like ``openai/`` ("" for ``null``)."""
        if is_null(node):
            return ""
        value = self.scalar(node, path) if isinstance(node, ScalarNode) else None
        if not isinstance(value, str) or value != value.strip():
            self.fail(f"{path}: expected a string like 'openai/', got {describe(node)}", node)
        return value

    # -- names and places ------------------------------------------------------------

    def path(self, node: Node, path: str) -> str:
        """A file or folder; relative ones resolve against ``base_dir``, ``~`` expands."""
        value = os.path.expanduser(self.string(node, path))
        return os.path.normpath(os.path.join(self.base_dir, value))

    def alias_name(self, node: Node, path: str) -> str:
        """A model name clients send: no surrounding spaces, no control characters."""
        name = self.string(node, path)
        if name != name.strip() or any(ord(c) < 32 or c == "\x7f" for c in name):
            self.fail(f"{path}: alias names may not have surrounding spaces or control chars", node)
        return name

    def listen(self, node: Node, path: str) -> str:
        """A Twisted server endpoint description (``server.listen``)."""
        value = self.scalar(node, path) if isinstance(node, ScalarNode) else None
        if not looks_like_endpoint(value):
            self.fail(
                f"{path}: expected a Twisted endpoint string like {ENDPOINT_EXAMPLE}, "
                f"got {describe(node)}",
                node,
            )
        problem = endpoint_problem(value)
        if problem is not None:
            self.fail(f"{path}: not a valid Twisted endpoint ({problem})", node)
        return value

    # -- the environment -------------------------------------------------------------

    def env_var(self, node: Node, path: str) -> tuple[str, str | None]:
        """The variable ``node`` names and its value in ``env`` (None when unset)."""
        name = self.string(node, path)
        if not _ENV_NAME.match(name):
            self.fail(
                f"{path}: expected the name of an environment variable (like OPENAI_API_KEY), "
                f"got {name!r}",
                node,
            )
        return name, self.env.get(name)

    def api_key(self, entry: NodeMap) -> str | None:
        """The key an entry's ``api_key_env`` names; None when it has none or may go without.

        The external aliases and the APIs read their key here, the same way: an unset
        (or empty) variable is an error unless the entry says ``api_key_optional: true``.
        """
        optional = entry.get("api_key_optional", self.boolean, False)
        node = entry.value_node("api_key_env")
        if node is None or is_null(node):
            return None
        path = entry.key_path("api_key_env")
        name, value = self.env_var(node, path)
        if value:
            return value
        if not optional:
            self.fail(
                f"{path}: environment variable {name} is not set; set it, "
                "or add 'api_key_optional: true' to go without a key",
                node,
            )
        return None

    def api_keys_from_env(self, node: Node, path: str) -> tuple[str, ...]:
        """Client keys from a variable holding comma-separated keys (``api_keys_env``)."""
        name, raw = self.env_var(node, path)
        if raw is None:
            self.fail(f"{path}: environment variable {name} is not set", node)
        keys = tuple(k.strip() for k in raw.split(",") if k.strip())
        if not keys:
            self.fail(
                f"{path}: environment variable {name} holds no key (expected comma-separated keys)",
                node,
            )
        return keys
