"""UpstreamSettings: the timeouts and pool size of requests server_core sends upstream.

The one definition: ``server_core.config`` reads the YAML ``server.upstream`` section
into it and ``UpstreamClient`` obeys it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["UpstreamSettings"]


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
