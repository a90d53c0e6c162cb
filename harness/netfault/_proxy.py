"""``FaultProxy``: the public face of netfault -- lifecycle, toxic management, stats.

It listens (``_connection.ListenFactory``), serves the control API on request
(``_control.ControlResource``) and keeps the toxic table in its ``ProxyCore``, which
the open connections read; adding or removing a toxic also edits every open
connection's chain, so the change applies to new data at once.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.web.server import Site

from harness.netfault._connection import ListenFactory, ProxyCore, Reactor
from harness.netfault._control import ControlResource
from harness.netfault._errors import DuplicateToxicError, ToxicNotFoundError
from harness.netfault._stats import DirectionStats, ProxyStats
from harness.netfault._toxic import Toxic


def _bound_port(listener: IListeningPort | None, not_started: str) -> int:
    if listener is None:
        raise RuntimeError(not_started)
    return int(listener.getHost().port)  # type: ignore[attr-defined]


class FaultProxy:
    """TCP proxy ``listen -> upstream`` with Toxiproxy toxics per direction.

    ``reactor`` must provide IReactorTCP and IReactorTime; all delays use its
    ``callLater``. Toxics added or removed apply to new data on open connections as
    well as to new connections.
    """

    def __init__(
        self,
        listen_port: int = 0,
        upstream: tuple[str, int] = ("127.0.0.1", 8080),
        seed: int = 0,
        reactor: Reactor | None = None,
        *,
        listen_host: str = "127.0.0.1",
        connect_timeout: float = 10.0,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.listen_host = listen_host
        self.listen_port = listen_port
        self._core = ProxyCore(reactor, (upstream[0], int(upstream[1])), seed, connect_timeout)
        self._listener: IListeningPort | None = None
        self._control: IListeningPort | None = None

    @property
    def reactor(self) -> Reactor:
        """The reactor every socket and delay goes through."""
        return self._core.reactor

    @property
    def upstream(self) -> tuple[str, int]:
        """The ``(host, port)`` every connection is forwarded to."""
        return self._core.upstream

    @property
    def seed(self) -> int:
        """The seed of the toxicity rolls and jitter/slicer draws."""
        return self._core.seed

    @property
    def connect_timeout(self) -> float:
        """Seconds to wait for the upstream connection before closing the client."""
        return self._core.connect_timeout

    # ---- lifecycle
    def start(self) -> Deferred[int]:
        """Start listening; fires with the bound port (also ``self.port``)."""
        if self._listener is not None:
            return defer.succeed(self.port)
        try:
            self._listener = self.reactor.listenTCP(
                self.listen_port, ListenFactory(self._core), interface=self.listen_host
            )
        except CannotListenError:
            return defer.fail()
        return defer.succeed(self.port)

    @property
    def port(self) -> int:
        """The bound listening port (after ``start``)."""
        return _bound_port(self._listener, "FaultProxy is not started")

    def start_control(self, port: int = 0, host: str = "127.0.0.1") -> Deferred[int]:
        """Serve the JSON control API; fires with its port (also ``control_port``)."""
        if self._control is None:
            site = Site(ControlResource(self))
            site.noisy = False
            try:
                self._control = self.reactor.listenTCP(port, site, interface=host)
            except CannotListenError:
                return defer.fail()
        return defer.succeed(self.control_port)

    @property
    def control_port(self) -> int:
        """The control API's bound port (after ``start_control``)."""
        return _bound_port(self._control, "control API is not started")

    def stop(self) -> Deferred[None]:
        """Stop listening (proxy and control API) and abort every open connection."""
        waits: list[Deferred[Any]] = []
        for listener in (self._listener, self._control):
            if listener is not None:
                result = listener.stopListening()
                if isinstance(result, Deferred):
                    waits.append(result)
        self._listener = self._control = None
        for conn in list(self._core.connections.values()):
            waits.append(conn.done)
            conn.abort()
        d = defer.gatherResults(waits, consumeErrors=True)
        return d.addCallback(lambda _: None)

    # ---- toxics
    def add_toxic(
        self,
        type: str,
        *,
        name: str | None = None,
        stream: str = "downstream",
        toxicity: float = 1.0,
        **attributes: int,
    ) -> Toxic:
        """Add a toxic (appended to its direction's chain) and return it."""
        toxic = Toxic.create(
            type, name=name, stream=stream, toxicity=toxicity, attributes=attributes
        )
        return self.install(toxic)

    def install(self, toxic: Toxic) -> Toxic:
        """Add an already built ``Toxic``."""
        core = self._core
        if toxic.name in core.toxics:
            raise DuplicateToxicError(f"toxic {toxic.name!r} already exists")
        core.toxics[toxic.name] = toxic
        core.stats.toxics[toxic.name] = {"applied": 0, "skipped": 0}
        for conn in list(core.connections.values()):
            conn.add_toxic(toxic)
        return toxic

    def remove_toxic(self, name: str) -> None:
        """Remove a toxic; data it holds on open connections is passed on at once."""
        core = self._core
        toxic = core.toxics.pop(name, None)
        if toxic is None:
            raise ToxicNotFoundError(f"no toxic named {name!r}")
        core.stats.toxics.pop(name, None)
        for conn in list(core.connections.values()):
            conn.remove_toxic(toxic)

    def reset(self) -> None:
        """Remove every toxic (Toxiproxy's ``POST /reset``)."""
        for name in list(self._core.toxics):
            self.remove_toxic(name)

    def toxics(self) -> list[Toxic]:
        """Current toxics in the order they were added."""
        return list(self._core.toxics.values())

    def get_toxic(self, name: str) -> Toxic:
        """The toxic named ``name``; ToxicNotFoundError if there is none."""
        try:
            return self._core.toxics[name]
        except KeyError:
            raise ToxicNotFoundError(f"no toxic named {name!r}") from None

    def stats(self) -> ProxyStats:
        """A snapshot copy of the counters."""
        s = self._core.stats
        return ProxyStats(
            connections_total=s.connections_total,
            connections_active=len(self._core.connections),
            upstream_connect_failures=s.upstream_connect_failures,
            resets=s.resets,
            upstream=DirectionStats(**asdict(s.upstream)),
            downstream=DirectionStats(**asdict(s.downstream)),
            toxics={name: dict(counts) for name, counts in s.toxics.items()},
        )
