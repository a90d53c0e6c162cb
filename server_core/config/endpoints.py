"""Is ``server.listen`` a Twisted server endpoint description? Checked without a reactor.

``serverFromString`` is Twisted's public parser for these strings, and it hands the
endpoint it builds a reactor. The check builds that endpoint and drops it unused, so a
stand-in takes the reactor's place: loading a configuration never imports (and so never
installs) the global reactor, which twistd picks only after the configuration is read.
"""

from __future__ import annotations

from typing import TypeGuard

from twisted.internet.endpoints import serverFromString

__all__ = [
    "ENDPOINT_EXAMPLE",
    "LISTEN_BACKLOG",
    "endpoint_problem",
    "looks_like_endpoint",
    "with_backlog",
]

ENDPOINT_EXAMPLE = "'tcp:1135:interface=127.0.0.1'"
"""A description to show next to "expected a Twisted endpoint string"."""


class _UnusedReactor:
    """What the endpoint built by the check holds instead of a reactor; nothing calls it."""


def looks_like_endpoint(value: object) -> TypeGuard[str]:
    """A string with a ``type:`` part; anything else is not worth parsing."""
    return isinstance(value, str) and ":" in value


def endpoint_problem(description: str) -> str | None:
    """Why Twisted would refuse ``description`` as a server endpoint, or None if it would not."""
    try:
        serverFromString(_UnusedReactor(), description)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return str(exc)
    return None


LISTEN_BACKLOG = 1024
"""Pending connections the kernel queues for a TCP listener (Twisted's default is 50).

A burst of 64 new streams overflowed 50: the kernel dropped SYNs and those clients waited
a second for the retransmit. The kernel caps the value at ``net.core.somaxconn``."""


def with_backlog(description: str, backlog: int = LISTEN_BACKLOG) -> str:
    """A ``tcp:``/``tcp6:`` description with ``backlog=`` (unless it sets one already)."""
    kind = description.split(":", 1)[0].strip().lower()
    if kind not in ("tcp", "tcp6") or "backlog=" in description:
        return description
    return f"{description}:backlog={backlog}"
