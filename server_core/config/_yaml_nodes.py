"""A YAML node tree read with types checked, where every error names the file and line.

The YAML is composed (``yaml.compose``), not loaded: nodes keep their line, so a bad value
becomes ``conf.yaml:12: server.upstream.connect_timeout: expected a number, got the string
'ten'``. ``NodeReader`` holds the generic checks (mappings with allowed keys and ``<<``
merges, lists, strings, numbers, JSON-like data); the configuration's own value kinds
build on it in ``_values``. Every failure is a ``ConfigError``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TypeVar

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from server_core.errors import ConfigError

__all__ = ["NodeMap", "NodeReader", "describe", "is_null", "line_of", "suggest"]

_T = TypeVar("_T")

NULL_TAG = "tag:yaml.org,2002:null"
STR_TAG = "tag:yaml.org,2002:str"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_MERGE = "tag:yaml.org,2002:merge"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MAX_PLAIN_NODES = 100_000

Convert = Callable[[Node, str], _T]
"""A value check: (node, dotted path for messages) -> the value, or a ``ConfigError``."""


def line_of(node: Node) -> int:
    """The 1-based line a node starts on."""
    return node.start_mark.line + 1


def is_null(node: Node) -> bool:
    """True for ``null``, ``~`` or an empty value."""
    return isinstance(node, ScalarNode) and node.tag == NULL_TAG


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(node: Node) -> str:
    """What a node is, for "expected X, got Y" messages: ``the string 'ten'``."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    value = str(node.value)
    if node.tag == NULL_TAG:
        return "null"
    if node.tag == _BOOL:
        return f"the boolean {value}"
    if node.tag in (_INT, _FLOAT):
        return f"the number {value}"
    if node.tag == STR_TAG:
        return f"the string {_short(value)!r}"
    if node.tag == "tag:yaml.org,2002:timestamp":
        return f"the date {value}"
    return f"{_short(value)!r} ({node.tag})"


def suggest(word: str, choices: Iterable[str]) -> str:
    """A "did you mean" hint for a misspelt ``word``, else the list of ``choices``."""
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (expected one of: {', '.join(choices)})" if choices else ""


class NodeMap:
    """A YAML mapping whose keys were checked against the allowed ones."""

    def __init__(
        self, reader: NodeReader, node: Node | None, path: str, allowed: Iterable[str] | None
    ) -> None:
        self.reader = reader
        self.path = path
        self.node = node
        self.pairs: dict[str, tuple[Node, Node]] = {}
        # A missing section, or "server:" with everything below commented out: all defaults.
        if node is None or is_null(node):
            return
        where = path or "the configuration"
        if not isinstance(node, MappingNode):
            reader.fail(f"{where}: expected a mapping (key: value), got {describe(node)}", node)
        self.pairs = reader.pairs(node, where)
        if allowed is not None:
            self._check_keys(where, tuple(allowed))

    def _check_keys(self, where: str, allowed: tuple[str, ...]) -> None:
        for key, (key_node, _value) in self.pairs.items():
            # Top-level "x-..." keys are free: a place to define YAML anchors.
            if not self.path and key.startswith("x-"):
                continue
            if key not in allowed:
                self.reader.fail(f"{where}: unknown key '{key}'{suggest(key, allowed)}", key_node)

    def key_path(self, key: str) -> str:
        """The dotted path of ``key`` below this mapping, for messages."""
        return f"{self.path}.{key}" if self.path else key

    def value_node(self, key: str) -> Node | None:
        """The node under ``key``, or None when the key is absent."""
        pair = self.pairs.get(key)
        return None if pair is None else pair[1]

    def line(self, key: str | None = None) -> int | None:
        """The line of ``key``'s value, else of the mapping itself."""
        pair = self.pairs.get(key) if key is not None else None
        if pair is not None:
            return line_of(pair[1])
        return None if self.node is None else line_of(self.node)

    def get(self, key: str, convert: Convert[_T], default: _T) -> _T:
        """``key``'s value checked by ``convert``, or ``default`` when it is absent."""
        node = self.value_node(key)
        if node is None:
            return default
        return convert(node, self.key_path(key))

    def require(self, key: str, convert: Convert[_T]) -> _T:
        """``key``'s value checked by ``convert``; a missing key is an error."""
        node = self.value_node(key)
        if node is None:
            self.reader.fail(f"{self.path}: missing required key '{key}'", self.node)
        return convert(node, self.key_path(key))


class NodeReader:
    """Generic typed checks on the nodes of one YAML document from ``file``."""

    def __init__(self, *, file: str) -> None:
        self.file = file
        self.constructor = SafeConstructor()
        self.plain_nodes = 0

    def fail(self, message: str, where: Node | int | None) -> NoReturn:
        """Raise ``ConfigError`` for ``message`` at a node's line (or a line number)."""
        line = line_of(where) if isinstance(where, Node) else where
        raise ConfigError(message, file=self.file, line=line)

    def compose(self, text: str) -> Node | None:
        """The document's root node (None when empty); syntax errors name their line."""
        try:
            return yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            self._syntax_error(exc, text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"YAML syntax error: {exc}", file=self.file) from None

    def _syntax_error(self, exc: yaml.MarkedYAMLError, text: str) -> NoReturn:
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark is not None and (mark is None or mark.index >= len(text)):
            # "unexpected end of stream" points past the last line: the unclosed
            # quote or bracket it is about is where the mistake is.
            mark = exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            # Like PyYAML's own text: "while parsing X (line N): <problem>".
            where = ""
            if exc.context_mark is not None and exc.context_mark.line + 1 != line:
                where = f" (line {exc.context_mark.line + 1})"
            message = f"{exc.context}{where}: {exc.problem}"
        raise ConfigError(f"YAML syntax error: {message}", file=self.file, line=line) from None

    # -- structure -----------------------------------------------------------------

    def pairs(
        self, node: MappingNode, path: str, _open: frozenset[int] = frozenset()
    ) -> dict[str, tuple[Node, Node]]:
        """Keys -> (key node, value node); duplicates are errors; ``<<`` merges apply."""
        self.plain_tag(node, _MAP, path)
        if id(node) in _open:
            self.fail(f"{path}: '<<' merges a mapping into itself", node)
        explicit: dict[str, tuple[Node, Node]] = {}
        merged: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                self._merge(value_node, path, _open | {id(node)}, merged)
                continue
            if not isinstance(key_node, ScalarNode) or key_node.tag != STR_TAG:
                self.fail(f"{path}: keys must be strings, got {describe(key_node)}", key_node)
            key = str(key_node.value)
            if key in explicit:
                first = line_of(explicit[key][0])
                self.fail(f"{path}: key '{key}' appears twice (first on line {first})", key_node)
            explicit[key] = (key_node, value_node)
        return {**merged, **explicit}

    def _merge(
        self,
        value_node: Node,
        path: str,
        _open: frozenset[int],
        merged: dict[str, tuple[Node, Node]],
    ) -> None:
        sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
        for source in sources:
            if not isinstance(source, MappingNode):
                self.fail(f"{path}: '<<' must merge a mapping", source)
            for key, pair in self.pairs(source, path, _open).items():
                merged.setdefault(key, pair)  # earlier merged maps win (YAML spec)

    def plain_tag(self, node: Node, tag: str, path: str) -> None:
        """Refuse a mapping or list carrying any tag but the plain one."""
        # Compose resolves tags but constructs nothing; "!!python/object" and friends on a
        # mapping or list would otherwise pass as plain data.
        if node.tag != tag:
            self.fail(f"{path}: YAML tag {node.tag} is not supported here", node)

    def mapping(self, node: Node | None, path: str, allowed: Iterable[str] | None) -> NodeMap:
        """``node`` as a mapping with only ``allowed`` keys (None = any key)."""
        return NodeMap(self, node, path, allowed)

    def sequence(self, node: Node, path: str) -> list[Node]:
        """The items of a list (``null`` = no items)."""
        if is_null(node):
            return []
        if not isinstance(node, SequenceNode):
            self.fail(f"{path}: expected a list, got {describe(node)}", node)
        self.plain_tag(node, _SEQ, path)
        return list(node.value)

    def scalar(self, node: Node, path: str) -> Any:
        """The Python value of a single (non-collection) node, built by the safe loader."""
        if not isinstance(node, ScalarNode):
            self.fail(f"{path}: expected a single value, got {describe(node)}", node)
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            self.fail(f"{path}: cannot read this value: {problem}", node)

    def _scalar_or_none(self, node: Node, path: str) -> Any:
        return self.scalar(node, path) if isinstance(node, ScalarNode) else None

    # -- typed values --------------------------------------------------------------

    def string(self, node: Node, path: str) -> str:
        """A non-blank string."""
        value = self._scalar_or_none(node, path)
        if not isinstance(value, str):
            self.fail(f"{path}: expected a string, got {describe(node)}", node)
        if not value.strip():
            self.fail(f"{path}: must not be empty", node)
        return value

    def opt_string(self, node: Node, path: str) -> str | None:
        """A non-blank string, or None for ``null``."""
        return None if is_null(node) else self.string(node, path)

    def boolean(self, node: Node, path: str) -> bool:
        """``true`` or ``false``."""
        value = self._scalar_or_none(node, path)
        if not isinstance(value, bool):
            self.fail(f"{path}: expected true or false, got {describe(node)}", node)
        return value

    def number(self, node: Node, path: str) -> float:
        """A finite number (booleans are not numbers here)."""
        value = self._scalar_or_none(node, path)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(f"{path}: expected a number, got {describe(node)}", node)
        try:
            as_float = float(value)
        except OverflowError:
            as_float = math.inf
        if not math.isfinite(as_float):
            self.fail(f"{path}: expected a finite number, got {str(node.value)[:24]}", node)
        return as_float

    def integer(self, node: Node, path: str) -> int:
        """A whole number (booleans are not numbers here)."""
        value = self._scalar_or_none(node, path)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{path}: expected a whole number, got {describe(node)}", node)
        return value

    def positive(self, node: Node, path: str) -> float:
        """A number of seconds greater than 0."""
        value = self.number(node, path)
        if value <= 0:
            self.fail(f"{path}: must be a number of seconds greater than 0, got {value:g}", node)
        return value

    def non_negative(self, node: Node, path: str) -> float:
        """A number of seconds, 0 or more."""
        value = self.number(node, path)
        if value < 0:
            self.fail(f"{path}: must be 0 or more seconds, got {value:g}", node)
        return value

    def count(self, minimum: int) -> Convert[int]:
        """A check for a whole number of at least ``minimum``."""

        def convert(node: Node, path: str) -> int:
            value = self.integer(node, path)
            if value < minimum:
                self.fail(f"{path}: must be a whole number >= {minimum}, got {value}", node)
            return value

        return convert

    def string_list(self, node: Node, path: str) -> tuple[str, ...]:
        """A list of non-blank strings."""
        out = []
        for i, item in enumerate(self.sequence(node, path)):
            out.append(self.string(item, f"{path}[{i}]"))
        return tuple(out)

    def plain(self, node: Node, path: str, _open: frozenset[int] = frozenset()) -> Any:
        """JSON-like data (request parameters): mappings, lists, str, numbers, bool, null."""
        # YAML aliases can make cycles (&a [*a]) or expand exponentially; JSON can't hold
        # the first and nobody means the second.
        self.plain_nodes += 1
        if self.plain_nodes > _MAX_PLAIN_NODES:
            self.fail(f"{path}: too much data (over {_MAX_PLAIN_NODES} values)", node)
        if id(node) in _open:
            self.fail(f"{path}: a YAML alias refers to its own parent", node)
        inner = _open | {id(node)}
        if isinstance(node, MappingNode):
            return {
                key: self.plain(value, f"{path}.{key}", inner)
                for key, (_k, value) in self.pairs(node, path).items()
            }
        if isinstance(node, SequenceNode):
            items = self.sequence(node, path)
            return [self.plain(item, f"{path}[{i}]", inner) for i, item in enumerate(items)]
        value = self.scalar(node, path)
        if value is None or isinstance(value, str | bool | int):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                self.fail(f"{path}: JSON has no {node.value}; use a finite number", node)
            return value
        self.fail(f"{path}: {describe(node)} is not a JSON value; quote it", node)
