"""The proxy's counters: what ``FaultProxy.stats()`` returns and ``GET /stats`` serves."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class DirectionStats:
    """Byte counters for one direction (``upstream`` = client -> server)."""

    bytes_in: int = 0  # read from the source socket
    bytes_out: int = 0  # written to the destination socket
    bytes_dropped: int = 0  # swallowed by timeout / reset_peer / limit_data / closed peer


@dataclass
class ProxyStats:
    """A snapshot of the proxy's counters (``FaultProxy.stats()``)."""

    connections_total: int = 0
    connections_active: int = 0
    upstream_connect_failures: int = 0
    resets: int = 0
    upstream: DirectionStats = field(default_factory=DirectionStats)
    downstream: DirectionStats = field(default_factory=DirectionStats)
    # toxic name -> {"applied": connections it applied to, "skipped": rolled out by toxicity}
    toxics: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``GET /stats``)."""
        return asdict(self)
