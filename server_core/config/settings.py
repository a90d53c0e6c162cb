"""The frozen settings a configuration file turns into.

``Config`` is what the rest of server_core reads: ``server`` (how clients reach us),
``llama`` (how managed llama-server processes run) and ``aliases`` (what each model name
means). ``UpstreamSettings`` (the timeouts and pool size of requests sent upstream) is
defined here once; ``UpstreamClient`` takes the very object parsed from the file.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from server_core.aliases import DefaultAliasStore

__all__ = ["DEFAULT_EXECUTABLE", "Config", "LlamaSettings", "ServerSettings", "UpstreamSettings"]


@dataclass(frozen=True)
class UpstreamSettings:
    """Timeouts (seconds) for requests server_core sends upstream, and the pool size."""

    connect_timeout: float = 10.0
    header_timeout: float = 600.0
    """From request sent to response headers (covers prompt processing)."""
    idle_timeout: float = 300.0
    """Longest silence allowed inside a response body."""
    max_connections_per_host: int = 256
    """Idle keep-alive connections kept per upstream host."""
    max_header_bytes: int = 64 * 1024
    """Largest response head (status line and headers) accepted from an upstream (-> 502)."""
    max_headers: int = 100
    """Most header lines accepted in one upstream response head (-> 502)."""


DEFAULT_EXECUTABLE = "llama-server"
"""What ``executable: null`` means: ``llama-server`` found on ``PATH``."""


@dataclass(frozen=True)
class ServerSettings:
    """How clients reach server_core: the listening endpoint, auth, limits, timeouts."""

    listen: str = "tcp:1135:interface=127.0.0.1"
    """A Twisted server endpoint description."""
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    """Keys clients must send as ``Authorization: Bearer KEY``; empty = no auth."""
    max_body_bytes: int = 10 * 1024 * 1024
    keepalive_interval: float = 15.0
    """Seconds of silence before a ``: keep-alive`` SSE comment."""
    drain_timeout: float = 30.0
    """On shutdown, how long in-flight responses may take to finish."""
    allowed_hosts: tuple[str, ...] = ()
    """``Host`` names accepted besides the loopback names and the listen address's host
    (``name`` on any port, ``name:port`` on that one; ``*`` turns the check off)."""
    cors_origins: tuple[str, ...] = ()
    """Web origins (``scheme://host[:port]``) whose pages may call the API; none by default."""
    allow_unauthenticated: bool = False
    """Serve a non-loopback address without API keys (refused otherwise)."""
    default_model: str | None = None
    """The model that serves requests naming none; None = the only alias, if there is
    exactly one, else such a request is a 400."""
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    metrics_public: bool = False
    """Serve ``/metrics`` without the API key (for a scraper inside a trusted network)."""
    node_name: str = field(default_factory=socket.gethostname)
    """This server's name in ``X-Served-By: NODE/ALIAS``; the host name by default."""
    json_logs: bool = False
    """Log one JSON line per finished request (model, status, ending, TTFT, duration)."""
    access_log: bool = False
    """Twisted's combined-format access log line per request (off: it costs 135-204 µs a
    request, and ``json_logs`` says more for a fraction of that)."""


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
    liveness_interval: float = 3.0
    """Seconds between ``/health`` probes of a ready server; 0 = no liveness probe."""
    liveness_timeout: float = 2.0
    """Seconds a probe waits for its answer (llama-server answers in ms, even when busy)."""
    liveness_misses: int = 3
    """Probes missed in a row before a ready server is killed as hung; 0 = never. A hung
    server is noticed within interval + (misses - 1) * max(interval, timeout) + timeout
    seconds (11 s by default)."""
    max_queue: int = 64
    queue_timeout: float = 300.0
    max_concurrent_per_alias: int | None = None
    max_wait: float = 30.0
    """Seconds a request for another model lets the loaded one keep serving its own
    requests before a swap is due; 0 = plain arrival order (a swap per change of model)."""
    min_resident: float = 0.0
    """Seconds a just-loaded model keeps serving, while wanted, before a due swap; 0 = off."""
    preload: tuple[str, ...] = ()
    """Managed models started when the server starts, ahead of their first request."""
    child_metrics: bool = True
    """Start managed servers with ``--metrics`` and re-export their ``llamacpp:*`` metrics
    on server_core's ``/metrics`` with a ``model`` label (``metrics.children``)."""

    def command_for(self, variant: str | None = None) -> tuple[str, tuple[str, ...]]:
        """(executable, args) for an alias's ``exec_variant`` (None = the default)."""
        if variant is not None:
            return self.variants[variant]
        return (self.executable or DEFAULT_EXECUTABLE, self.args)


@dataclass(frozen=True)
class OllamaSettings:
    """Ollama's API (``server_core.ollama``): what it reports and what it allows."""

    version: str = "0.12.3"
    """What ``GET /api/version`` says (VS Code Copilot needs at least 0.6.4)."""
    max_keep_alive: float | None = None
    """Cap, in seconds, on a request's ``keep_alive`` (None: no cap; negative = forever is
    then capped too)."""


@dataclass(frozen=True)
class Config:
    """A whole validated configuration: server, llama-server and alias settings."""

    server: ServerSettings = field(default_factory=ServerSettings)
    llama: LlamaSettings = field(default_factory=LlamaSettings)
    ollama: OllamaSettings = field(default_factory=OllamaSettings)
    aliases: DefaultAliasStore = field(default_factory=DefaultAliasStore)
    source: str | None = None
    """The file the configuration came from (absolute), or None."""
