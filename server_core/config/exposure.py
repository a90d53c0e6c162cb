"""Who can reach the listening address, decided before anything is bound.

``listen_address`` reads the interface a Twisted endpoint description binds. Loopback
and UNIX sockets are reachable from this machine only; anything else (another
interface, every interface, an endpoint type whose address cannot be read) may be
reachable from the network. ``unauthenticated_refusal`` is the one start-up rule built
on that: a server reachable from the network must have API keys, unless the operator
wrote ``server.allow_unauthenticated: true``. ``allowed_hosts`` is the set of ``Host``
names the browser guard accepts by default.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor

from server_core.config.settings import ServerSettings

__all__ = [
    "LOOPBACK_HOSTS",
    "ListenAddress",
    "allowed_hosts",
    "listen_address",
    "unauthenticated_refusal",
    "unauthenticated_warning",
]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
"""The ``Host`` names of this machine's loopback interface, always accepted."""


@dataclass(frozen=True)
class ListenAddress:
    """Where an endpoint description listens, as far as its string tells."""

    host: str | None
    """The interface as a ``Host`` header writes it (``[::1]``), "" for every interface,
    None for a UNIX socket or an endpoint whose address is unknown."""
    local: bool
    """Only processes on this machine can connect (loopback interface, UNIX socket)."""

    @property
    def every_interface(self) -> bool:
        """Bound to 0.0.0.0 / :: (or no interface given): every address of the machine."""
        return self.host == ""


def listen_address(description: str) -> ListenAddress:
    """The address ``description`` (a valid Twisted server endpoint string) listens on.

    The endpoint is built and "listened" on a ``MemoryReactor``, which records the
    interface exactly as Twisted's own parser understood it (positional or keyword,
    TCP, TCP6 or TLS) without binding anything and without Twisted's private names.
    """
    reactor = MemoryReactor()
    try:
        listening = serverFromString(reactor, description).listen(Factory.forProtocol(Protocol))
    except Exception:
        # Not for the memory reactor (systemd sockets, plugins): assume the worst.
        return ListenAddress(host=None, local=False)
    failed: list[object] = []
    listening.addErrback(failed.append)
    if failed:
        return ListenAddress(host=None, local=False)
    if reactor.unixServers:
        return ListenAddress(host=None, local=True)
    servers = [s[-1] for s in reactor.tcpServers] + [s[-1] for s in reactor.sslServers]
    if not servers:
        return ListenAddress(host=None, local=False)
    return _interface(str(servers[0]))


def _interface(interface: str) -> ListenAddress:
    if interface in ("", "0.0.0.0", "::"):
        return ListenAddress(host="", local=False)
    if interface.lower() == "localhost":
        return ListenAddress(host="localhost", local=True)
    try:
        ip = ipaddress.ip_address(interface)
    except ValueError:
        return ListenAddress(host=interface.lower(), local=False)
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        loopback = ip.is_loopback or (mapped is not None and mapped.is_loopback)
        return ListenAddress(host=f"[{ip.compressed}]", local=loopback)
    return ListenAddress(host=ip.compressed, local=ip.is_loopback)


def allowed_hosts(settings: ServerSettings, listen: str) -> tuple[str, ...]:
    """The loopback names, the listen address's host, then ``server.allowed_hosts``."""
    names = list(LOOPBACK_HOSTS)
    host = listen_address(listen).host
    if host and host not in names:
        names.append(host)
    names.extend(h for h in settings.allowed_hosts if h not in names)
    return tuple(names)


def unauthenticated_refusal(settings: ServerSettings, listen: str) -> str | None:
    """Why serving ``listen`` with these settings is refused, or None when it is not.

    Without keys, anyone who can reach a network address can run models and unload them;
    the operator has to say that this is intended.
    """
    if settings.api_keys or settings.allow_unauthenticated or listen_address(listen).local:
        return None
    return (
        f"refusing to listen on {listen!r} without API keys: that address can be reached "
        "from other machines. Add keys under 'server:' (api_keys: [KEY] or "
        "api_keys_env: VARIABLE holding comma-separated keys), listen on 127.0.0.1, or "
        "set 'allow_unauthenticated: true' under 'server:' if anyone who can reach it may "
        "use it"
    )


def unauthenticated_warning(settings: ServerSettings, listen: str) -> str | None:
    """The warning for a start that ``allow_unauthenticated`` let through, or None."""
    if settings.api_keys or listen_address(listen).local:
        return None
    return (
        f"listening on {listen!r} without API keys (server.allow_unauthenticated is "
        "true): anyone who can reach this address can use and unload every model"
    )
