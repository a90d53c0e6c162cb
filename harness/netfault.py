"""TCP fault proxy with Toxiproxy's toxics.

``FaultProxy`` listens on a TCP port, opens one upstream connection per accepted
client and relays bytes both ways through a chain of *toxics* per direction, named
and parameterised exactly like Toxiproxy's (https://github.com/Shopify/toxiproxy):

==============  ==============================================  =======================
type            attributes                                      effect
==============  ==============================================  =======================
``latency``     ``latency`` ms, ``jitter`` ms                   delay every chunk
``bandwidth``   ``rate`` KB/s (1 KB = 1000 bytes; 0 = no limit)  pace the bytes
``slow_close``  ``delay`` ms                                    delay the close
``timeout``     ``timeout`` ms (0 = never close)                drop data, then close
``reset_peer``  ``timeout`` ms                                  TCP RST after first data
``slicer``      ``average_size`` B, ``size_variation`` B,       split writes, pause
                ``delay`` µs                                    between pieces
``limit_data``  ``bytes`` B                                     close after N bytes
==============  ==============================================  =======================

``stream`` is ``upstream`` (client -> server) or ``downstream`` (server -> client);
``toxicity`` is the probability that a toxic applies to one connection, rolled once per
connection and toxic from a generator seeded with ``(seed, connection number, toxic
name)``, so a run is reproducible from its seed. Timing goes through the injected
reactor's ``callLater``/``seconds`` so tests can drive it with
``twisted.internet.testing.MemoryReactorClock``.

Besides the Python API there is a small JSON control API (``FaultProxy.start_control``)
and the ``netfault`` console script (``main``). See ``docs/netfault.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar
from urllib.parse import unquote

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IConnector,
    IDelayedCall,
    IListeningPort,
    IPushProducer,
)
from twisted.internet.protocol import ClientFactory, Protocol, ServerFactory, connectionDone
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

__all__ = [
    "STREAMS",
    "TOXIC_TYPES",
    "DirectionStats",
    "DuplicateToxicError",
    "FaultProxy",
    "InvalidToxicError",
    "NetfaultError",
    "ProxyStats",
    "Toxic",
    "ToxicNotFoundError",
    "main",
    "parse_address",
    "parse_toxic_spec",
]

#: Toxic type -> {attribute name: unit}. Same names and units as Toxiproxy.
TOXIC_TYPES: Mapping[str, Mapping[str, str]] = {
    "latency": {"latency": "ms", "jitter": "ms"},
    "bandwidth": {"rate": "KB/s"},
    "slow_close": {"delay": "ms"},
    "timeout": {"timeout": "ms"},
    "reset_peer": {"timeout": "ms"},
    "slicer": {"average_size": "bytes", "size_variation": "bytes", "delay": "us"},
    "limit_data": {"bytes": "bytes"},
}
STREAMS = ("upstream", "downstream")

# Bytes held inside one direction's toxics before the source socket is paused; it is
# resumed below the low mark. Keeps memory bounded when a toxic holds data back.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
# Largest request body the control API reads.
MAX_CONTROL_BODY = 64 * 1024
_MAX_INT = 2**63 - 1  # Toxiproxy's attributes are int64
# A timer fired for the head item releases everything due within this slack, so float
# rounding between ``seconds() + delay`` computations cannot strand an item.
_EPSILON = 1e-9

# Stand-in for "the reactor": needs IReactorTCP + IReactorTime (and is commonly
# ``twisted.internet.reactor`` or a ``MemoryReactorClock`` in tests).
_Reactor = Any
# A connected TCP transport: ITCPTransport + IConsumer + IPushProducer. Protocol
# types ``transport`` as plain ITransport, which lacks most of what is used here.
_Transport = Any


def _tcp(protocol: Protocol) -> _Transport:
    return protocol.transport


class NetfaultError(Exception):
    """Base class of the errors the proxy API raises."""


class InvalidToxicError(NetfaultError, ValueError):
    """Bad toxic type, stream, toxicity or attributes (HTTP 400)."""


class ToxicNotFoundError(NetfaultError, LookupError):
    """No toxic with that name (HTTP 404)."""


class DuplicateToxicError(NetfaultError, ValueError):
    """A toxic with that name already exists (HTTP 409)."""


# --------------------------------------------------------------------------- toxics


def _check_int(type_: str, key: str, value: object) -> int:
    # bool is an int subclass; True as a latency is a client bug, not 1 ms.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidToxicError(
            f"{type_}: attribute {key!r} must be an integer "
            f"({TOXIC_TYPES[type_][key]}), got {value!r}"
        )
    if not 0 <= value <= _MAX_INT:
        raise InvalidToxicError(f"{type_}: attribute {key!r} must be >= 0, got {value}")
    return value


@dataclass(frozen=True)
class Toxic:
    """One configured toxic: what it is, which direction, how often, with what settings.

    Build it with ``Toxic.create`` (validates and fills defaults) or ``from_json``.
    """

    name: str
    type: str
    stream: str
    toxicity: float
    attributes: Mapping[str, int]

    @classmethod
    def create(
        cls,
        type: str,
        *,
        name: str | None = None,
        stream: str = "downstream",
        toxicity: float = 1.0,
        attributes: Mapping[str, object] | None = None,
    ) -> Toxic:
        """Validate everything; unset attributes default to 0 like Toxiproxy's."""
        if not isinstance(type, str) or type not in TOXIC_TYPES:
            raise InvalidToxicError(
                f"unknown toxic type {type!r}; known: {', '.join(sorted(TOXIC_TYPES))}"
            )
        if stream not in STREAMS:
            raise InvalidToxicError(f"stream must be 'upstream' or 'downstream', got {stream!r}")
        if isinstance(toxicity, bool) or not isinstance(toxicity, int | float):
            raise InvalidToxicError(f"toxicity must be a number in [0, 1], got {toxicity!r}")
        if not 0.0 <= float(toxicity) <= 1.0:
            raise InvalidToxicError(f"toxicity must be in [0, 1], got {toxicity!r}")
        if name is None:
            name = f"{type}_{stream}"
        if not isinstance(name, str) or not name or "/" in name or len(name) > 200:
            raise InvalidToxicError(
                f"name must be a non-empty string without '/' (<= 200 chars), got {name!r}"
            )
        given = dict(attributes or {})
        known = TOXIC_TYPES[type]
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise InvalidToxicError(
                f"{type}: unknown attribute(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(known) or 'none'}"
            )
        attrs = {key: _check_int(type, key, given.get(key, 0)) for key in known}
        if type == "slicer":
            if attrs["average_size"] < 1:
                raise InvalidToxicError("slicer: attribute 'average_size' must be >= 1")
            if attrs["size_variation"] >= attrs["average_size"]:
                raise InvalidToxicError(
                    "slicer: attribute 'size_variation' must be smaller than 'average_size'"
                )
        return cls(name, type, stream, float(toxicity), attrs)

    @classmethod
    def from_json(cls, obj: object) -> Toxic:
        """Parse Toxiproxy's toxic JSON: ``{name, type, stream, toxicity, attributes}``."""
        if not isinstance(obj, dict):
            raise InvalidToxicError("toxic must be a JSON object")
        extra = sorted(set(obj) - {"name", "type", "stream", "toxicity", "attributes"})
        if extra:
            raise InvalidToxicError(f"unknown field(s) {', '.join(map(repr, extra))}")
        if "type" not in obj:
            raise InvalidToxicError("missing field 'type'")
        attributes = obj.get("attributes", {})
        if attributes is None:
            attributes = {}
        if not isinstance(attributes, dict):
            raise InvalidToxicError("'attributes' must be a JSON object")
        return cls.create(
            obj["type"],
            name=obj.get("name"),
            stream=obj.get("stream", "downstream"),
            toxicity=obj.get("toxicity", 1.0),
            attributes=attributes,
        )

    def to_json(self) -> dict[str, Any]:
        """Toxiproxy's JSON shape for this toxic."""
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": dict(self.attributes),
        }


def parse_toxic_spec(spec: str) -> Toxic:
    """Parse the CLI form ``TYPE[:STREAM[:KEY=VALUE,...]]``.

    ``name`` and ``toxicity`` may appear among the keys, e.g.
    ``latency:downstream:latency=100,jitter=10,toxicity=0.5,name=slow``.
    """
    parts = spec.split(":", 2)
    type_ = parts[0].strip()
    stream = parts[1].strip() if len(parts) > 1 and parts[1].strip() else "downstream"
    attributes: dict[str, object] = {}
    name: str | None = None
    toxicity = 1.0
    if len(parts) > 2 and parts[2].strip():
        for item in parts[2].split(","):
            key, sep, raw = item.partition("=")
            key, raw = key.strip(), raw.strip()
            if not sep or not key or not raw:
                raise InvalidToxicError(f"bad attribute {item!r} in {spec!r}; expected KEY=VALUE")
            if key == "name":
                name = raw
            elif key == "toxicity":
                try:
                    toxicity = float(raw)
                except ValueError:
                    raise InvalidToxicError(f"toxicity must be a number, got {raw!r}") from None
            else:
                try:
                    attributes[key] = int(raw)
                except ValueError:
                    raise InvalidToxicError(
                        f"attribute {key!r} must be an integer, got {raw!r}"
                    ) from None
    return Toxic.create(type_, name=name, stream=stream, toxicity=toxicity, attributes=attributes)


# --------------------------------------------------------------------------- stats


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


# --------------------------------------------------------------------------- pipeline


class _Pipe:
    """Something a stage emits into: the next stage, or the link's sink."""

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def end(self) -> None:
        raise NotImplementedError


class _Stage(_Pipe):
    """One toxic instance on one link. The base class passes everything through
    (it is also the no-op used when toxicity rolled "not applied")."""

    def __init__(self, toxic: Toxic, link: _Link, out: _Pipe) -> None:
        self.toxic = toxic
        self.link = link
        self.out = out
        self.ended = False  # an end-of-stream went in (or was generated here)

    def write(self, data: bytes) -> None:
        if self.ended:
            self.link.dropped(len(data))
            return
        self.out.write(data)

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.out.end()

    def detach(self) -> tuple[bytes, bool]:
        """Leave the chain (toxic removed): stop timers, hand back data not yet
        emitted and whether an end-of-stream must still be passed on."""
        return b"", False

    def cancel(self) -> None:
        """The connection is gone: stop every timer, forget held data."""


class _Scheduled(_Stage):
    """FIFO of (due time, piece | None for end-of-stream) released by one timer.

    Subclasses plan each write into timed pieces; due times never decrease, so data
    leaves in order. ``self.free_at`` is the earliest time the next piece may leave.
    """

    def __init__(self, toxic: Toxic, link: _Link, out: _Pipe) -> None:
        super().__init__(toxic, link, out)
        self.queue: deque[tuple[float, bytes | None]] = deque()
        self.free_at = 0.0
        self.timer: IDelayedCall | None = None
        self.cancelled = False

    def plan(self, data: bytes, now: float) -> Iterable[tuple[float, bytes]]:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        if self.ended or self.cancelled:
            self.link.dropped(len(data))
            return
        for due, piece in self.plan(data, self.link.clock.seconds()):
            self.queue.append((due, piece))
            self.link.held(len(piece))
        self._pump()

    def end(self) -> None:
        if self.ended or self.cancelled:
            return
        self.ended = True
        self.queue.append((max(self.free_at, self.link.clock.seconds()), None))
        self._pump()

    def _pump(self, force_head: bool = False) -> None:
        now = self.link.clock.seconds()
        while self.queue and (force_head or self.queue[0][0] <= now + _EPSILON):
            force_head = False
            _, piece = self.queue.popleft()
            if piece is None:
                self.out.end()
            else:
                self.link.held(-len(piece))
                self.out.write(piece)
        if self.queue and self.timer is None and not self.cancelled:
            self.timer = self.link.clock.callLater(max(0.0, self.queue[0][0] - now), self._fire)

    def _fire(self) -> None:
        self.timer = None
        self._pump(force_head=True)

    def _stop_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def detach(self) -> tuple[bytes, bool]:
        self._stop_timer()
        pieces = [piece for _, piece in self.queue if piece is not None]
        eof = any(piece is None for _, piece in self.queue)
        data = b"".join(pieces)
        self.link.held(-len(data))
        self.queue.clear()
        self.cancelled = True
        return data, eof

    def cancel(self) -> None:
        self.detach()


class _Latency(_Scheduled):
    """Each chunk leaves ``latency`` +/- ``jitter`` ms after it arrived, in order."""

    def plan(self, data: bytes, now: float) -> Iterable[tuple[float, bytes]]:
        delay_ms = self.toxic.attributes["latency"]
        jitter = self.toxic.attributes["jitter"]
        if jitter > 0:
            delay_ms += self.link.rng_for(self.toxic).randrange(2 * jitter) - jitter
        due = max(self.free_at, now + max(0, delay_ms) / 1000.0)
        self.free_at = due
        return [(due, data)]


class _Bandwidth(_Scheduled):
    """At most ``rate`` KB/s; big writes go out in 100 ms pieces like Toxiproxy."""

    def plan(self, data: bytes, now: float) -> Iterable[tuple[float, bytes]]:
        rate = self.toxic.attributes["rate"]
        if rate <= 0:
            self.free_at = max(self.free_at, now)
            return [(self.free_at, data)]
        bytes_per_second = rate * 1000
        step = rate * 100  # bytes in 100 ms
        out = []
        for i in range(0, len(data), step):
            piece = data[i : i + step]
            # The piece leaves once its transmission time has elapsed (Toxiproxy
            # sleeps before it sends), counted from when the link is free.
            self.free_at = max(self.free_at, now) + len(piece) / bytes_per_second
            out.append((self.free_at, piece))
        return out


class _Slicer(_Scheduled):
    """Split each write into ``average_size`` +/- ``size_variation`` byte pieces,
    ``delay`` µs apart (Toxiproxy's bisection algorithm)."""

    def _cuts(self, length: int) -> list[tuple[int, int]]:
        avg = self.toxic.attributes["average_size"]
        var = self.toxic.attributes["size_variation"]
        rng = self.link.rng_for(self.toxic)
        out: list[tuple[int, int]] = []
        stack = [(0, length)]
        while stack:
            start, end = stack.pop()
            if (end - start) - avg <= var:
                out.append((start, end))
                continue
            mid = start + (end - start) // 2
            if var > 0:
                mid += rng.randrange(2 * var) - var
            # Right half pushed first so the left half is emitted first.
            stack.append((mid, end))
            stack.append((start, mid))
        return out

    def plan(self, data: bytes, now: float) -> Iterable[tuple[float, bytes]]:
        gap = self.toxic.attributes["delay"] / 1e6
        t = max(self.free_at, now)
        out = []
        for start, end in self._cuts(len(data)):
            out.append((t, data[start:end]))
            t += gap
        self.free_at = t
        return out


class _SlowClose(_Stage):
    """Data passes at once; the end-of-stream waits ``delay`` ms."""

    timer: IDelayedCall | None = None

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        self.timer = self.link.clock.callLater(self.toxic.attributes["delay"] / 1000.0, self._close)

    def _close(self) -> None:
        self.timer = None
        self.out.end()

    def detach(self) -> tuple[bytes, bool]:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
            self.timer = None
            return b"", True
        return b"", False

    def cancel(self) -> None:
        self.detach()


class _Timeout(_Stage):
    """Drop all data; after ``timeout`` ms (counted from when the toxic took effect on
    this connection) end the stream. 0 = hold forever. Removing it closes the
    connection, like Toxiproxy (the dropped bytes make the stream unusable)."""

    timer: IDelayedCall | None = None

    def __init__(self, toxic: Toxic, link: _Link, out: _Pipe) -> None:
        super().__init__(toxic, link, out)
        timeout = toxic.attributes["timeout"]
        if timeout > 0:
            self.timer = link.clock.callLater(timeout / 1000.0, self.end)

    def write(self, data: bytes) -> None:
        self.link.dropped(len(data))

    def end(self) -> None:
        self._stop()
        super().end()

    def _stop(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def detach(self) -> tuple[bytes, bool]:
        self._stop()
        if self.ended:
            return b"", False
        self.ended = True
        return b"", True

    def cancel(self) -> None:
        self._stop()


class _ResetPeer(_Stage):
    """The first data (or end-of-stream) is dropped and arms a timer; after
    ``timeout`` ms both sockets are reset (RST). Later data is dropped too. Once armed
    the reset happens even if the toxic is removed (the stream already lost bytes)."""

    timer: IDelayedCall | None = None
    armed = False

    def _arm(self) -> None:
        if self.armed:
            return
        self.armed = True
        timeout = self.toxic.attributes["timeout"]
        if timeout == 0:
            self.link.conn.reset()
        else:
            self.timer = self.link.clock.callLater(timeout / 1000.0, self.link.conn.reset)

    def write(self, data: bytes) -> None:
        self.link.dropped(len(data))
        self._arm()

    def end(self) -> None:
        self.ended = True
        self._arm()

    def detach(self) -> tuple[bytes, bool]:
        # Not armed: nothing was dropped, the stream continues untouched.
        return b"", False

    def cancel(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class _LimitData(_Stage):
    """Pass ``bytes`` bytes in total, then end the stream (the connection closes)."""

    sent = 0

    def write(self, data: bytes) -> None:
        if self.ended:
            self.link.dropped(len(data))
            return
        remaining = self.toxic.attributes["bytes"] - self.sent
        piece = data[: max(0, remaining)]
        if len(piece) < len(data):
            self.link.dropped(len(data) - len(piece))
        if piece:
            self.sent += len(piece)
            self.out.write(piece)
        if self.sent >= self.toxic.attributes["bytes"]:
            self.end()


_STAGES: dict[str, type[_Stage]] = {
    "latency": _Latency,
    "bandwidth": _Bandwidth,
    "slicer": _Slicer,
    "slow_close": _SlowClose,
    "timeout": _Timeout,
    "reset_peer": _ResetPeer,
    "limit_data": _LimitData,
}


class _Sink(_Pipe):
    """End of a link: the destination socket."""

    def __init__(self, link: _Link, transport: _Transport) -> None:
        self.link = link
        self.transport = transport
        self.gone = False  # destination socket lost
        self.ended = False

    def write(self, data: bytes) -> None:
        if self.gone or self.ended:
            self.link.dropped(len(data))
            return
        self.link.stats.bytes_out += len(data)
        self.transport.write(data)

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        if not self.gone:
            # A registered producer would keep loseConnection from ever completing.
            self.transport.unregisterProducer()
            self.transport.loseConnection()


@implementer(IPushProducer)
class _Link:
    """One direction of one proxied connection: source socket -> toxics -> sink.

    It is the streaming producer of the sink transport: when the sink's buffer is
    full, or the toxics hold more than HIGH_WATER bytes, the source socket is paused.
    """

    def __init__(
        self,
        conn: _Connection,
        stream: str,
        source: _Transport,
        sink: _Transport,
        stats: DirectionStats,
    ) -> None:
        self.conn = conn
        self.stream = stream
        self.clock = conn.proxy.reactor
        self.source = source
        self.stats = stats
        self.sink = _Sink(self, sink)
        self.stages: list[_Stage] = []
        self.ended = False
        self._held = 0
        self._sink_paused = False
        self._source_paused = False
        self._rngs: dict[str, random.Random] = {}

    # ---- data path
    @property
    def head(self) -> _Pipe:
        return self.stages[0] if self.stages else self.sink

    def push(self, data: bytes) -> None:
        self.stats.bytes_in += len(data)
        if self.ended:
            self.dropped(len(data))
            return
        self.head.write(data)

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.head.end()

    def dropped(self, n: int) -> None:
        self.stats.bytes_dropped += n

    def held(self, delta: int) -> None:
        self._held += delta
        self._update_source()

    def rng_for(self, toxic: Toxic) -> random.Random:
        """Randomness for jitter/slicing, reproducible per (seed, connection, toxic)."""
        rng = self._rngs.get(toxic.name)
        if rng is None:
            rng = random.Random(f"{self.conn.proxy.seed}:{self.conn.id}:{toxic.name}:data")
            self._rngs[toxic.name] = rng
        return rng

    # ---- chain edits
    def add(self, toxic: Toxic, applies: bool) -> None:
        """Append a toxic at the end of the chain (Toxiproxy's order)."""
        cls = _STAGES[toxic.type] if applies else _Stage
        stage = cls(toxic, self, self.sink)
        if self.stages:
            self.stages[-1].out = stage
        self.stages.append(stage)

    def remove(self, name: str) -> None:
        index = next((i for i, st in enumerate(self.stages) if st.toxic.name == name), None)
        if index is None:
            return
        stage = self.stages[index]
        del self.stages[index]
        data, eof = stage.detach()
        nxt = stage.out
        if index > 0:
            self.stages[index - 1].out = nxt
        # Held data predates anything the previous stage emits from now on.
        if data:
            nxt.write(data)
        if eof:
            nxt.end()

    def cancel(self) -> None:
        for stage in self.stages:
            stage.cancel()

    # ---- flow control
    def _update_source(self) -> None:
        want_pause = self._sink_paused or self._held > HIGH_WATER
        if self.conn.source_lost(self):
            return
        if want_pause and not self._source_paused:
            self._source_paused = True
            self.source.pauseProducing()
        elif self._source_paused and not self._sink_paused and self._held <= LOW_WATER:
            self._source_paused = False
            self.source.resumeProducing()

    def pauseProducing(self) -> None:
        self._sink_paused = True
        self._update_source()

    def resumeProducing(self) -> None:
        self._sink_paused = False
        self._update_source()

    def stopProducing(self) -> None:
        # The sink transport is going away; _Connection handles the teardown.
        pass


# --------------------------------------------------------------------------- sockets


class _ClientSide(Protocol):
    """The accepted client connection."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.conn: _Connection | None = None

    def connectionMade(self) -> None:
        self.conn = _Connection(self.proxy, self)

    def dataReceived(self, data: bytes) -> None:
        assert self.conn is not None
        self.conn.client_data(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.conn is not None:
            self.conn.client_lost()


class _ServerSide(Protocol):
    """The proxy's connection to the upstream server."""

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn

    def connectionMade(self) -> None:
        self.conn.server_connected(self)

    def dataReceived(self, data: bytes) -> None:
        self.conn.server_data(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.conn.server_lost()


class _UpstreamFactory(ClientFactory):
    noisy = False

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn

    def buildProtocol(self, addr: object) -> _ServerSide:
        return _ServerSide(self.conn)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.conn.server_connect_failed()


class _ListenFactory(ServerFactory):
    noisy = False

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy

    def buildProtocol(self, addr: object) -> _ClientSide:
        return _ClientSide(self.proxy)


class _Connection:
    """A client connection, its upstream connection and the two links between them.

    Closing follows Toxiproxy: when a link's stream ends (its source closed, or a
    toxic ended it) its destination socket is closed after the data in front of the
    end-of-stream has left; that close is in turn the end of the other link's source.
    """

    def __init__(self, proxy: FaultProxy, client: _ClientSide) -> None:
        self.proxy = proxy
        self.client = client
        self.server: _ServerSide | None = None
        self.up: _Link | None = None
        self.down: _Link | None = None
        self.is_client_lost = False
        self.is_server_lost = False
        self.finished = False
        self.aborting = False  # stop() or reset_peer tore it down on purpose
        self.done: Deferred[None] = Deferred()
        self.id = proxy._register(self)
        # No reading until there is somewhere to send the bytes.
        _tcp(client).pauseProducing()
        host, port = proxy.upstream
        self.connector: IConnector = proxy.reactor.connectTCP(
            host, port, _UpstreamFactory(self), timeout=proxy.connect_timeout
        )

    # ---- events from the sockets
    def server_connected(self, server: _ServerSide) -> None:
        self.server = server
        if self.is_client_lost:
            _tcp(server).loseConnection()
            return
        client_t, server_t = _tcp(self.client), _tcp(server)
        stats = self.proxy._stats
        self.up = _Link(self, "upstream", client_t, server_t, stats.upstream)
        self.down = _Link(self, "downstream", server_t, client_t, stats.downstream)
        for toxic in self.proxy._toxics.values():
            self.add_toxic(toxic)
        server_t.registerProducer(self.up, True)
        client_t.registerProducer(self.down, True)
        client_t.resumeProducing()

    def server_connect_failed(self) -> None:
        self.is_server_lost = True
        if not self.is_client_lost and not self.aborting:
            self.proxy._stats.upstream_connect_failures += 1
            # Like Toxiproxy: no upstream, so the client is simply closed.
            _tcp(self.client).loseConnection()
        self._maybe_finished()

    def client_data(self, data: bytes) -> None:
        if self.up is not None:
            self.up.push(data)

    def server_data(self, data: bytes) -> None:
        if self.down is not None:
            self.down.push(data)

    def client_lost(self) -> None:
        self.is_client_lost = True
        if self.down is not None:
            self.down.sink.gone = True
        if self.up is not None:
            self.up.end()
        elif self.server is None:
            self.connector.disconnect()  # still connecting: give up
        self._maybe_finished()

    def server_lost(self) -> None:
        self.is_server_lost = True
        if self.up is not None:
            self.up.sink.gone = True
        if self.down is not None:
            self.down.end()
        self._maybe_finished()

    def source_lost(self, link: _Link) -> bool:
        return self.is_client_lost if link is self.up else self.is_server_lost

    # ---- actions
    def add_toxic(self, toxic: Toxic) -> None:
        link = self.up if toxic.stream == "upstream" else self.down
        if link is None:
            return  # links are built from the proxy's toxic list once connected
        link.add(toxic, self.proxy._decide(self.id, toxic))

    def remove_toxic(self, toxic: Toxic) -> None:
        link = self.up if toxic.stream == "upstream" else self.down
        if link is not None:
            link.remove(toxic.name)

    def reset(self) -> None:
        """reset_peer: RST both sockets (Twisted's abortConnection sets SO_LINGER 0)."""
        if self.finished:
            return
        self.proxy._stats.resets += 1
        self.abort()

    def abort(self) -> None:
        self.aborting = True
        for side, lost in ((self.client, self.is_client_lost), (self.server, self.is_server_lost)):
            if side is not None and side.transport is not None and not lost:
                _tcp(side).abortConnection()
        if self.server is None and not self.is_server_lost:
            self.connector.disconnect()

    def _maybe_finished(self) -> None:
        if self.finished or not (self.is_client_lost and self.is_server_lost):
            return
        self.finished = True
        for link in (self.up, self.down):
            if link is not None:
                link.cancel()
        self.proxy._unregister(self)
        self.done.callback(None)


# --------------------------------------------------------------------------- proxy


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
        reactor: _Reactor | None = None,
        *,
        listen_host: str = "127.0.0.1",
        connect_timeout: float = 10.0,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor: _Reactor = reactor
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.upstream = (upstream[0], int(upstream[1]))
        self.seed = seed
        self.connect_timeout = connect_timeout
        self._toxics: dict[str, Toxic] = {}
        self._connections: dict[int, _Connection] = {}
        self._next_id = 0
        self._stats = ProxyStats()
        self._listener: IListeningPort | None = None
        self._control: IListeningPort | None = None

    # ---- lifecycle
    def start(self) -> Deferred[int]:
        """Start listening; fires with the bound port (also ``self.port``)."""
        if self._listener is not None:
            return defer.succeed(self.port)
        try:
            self._listener = self.reactor.listenTCP(
                self.listen_port, _ListenFactory(self), interface=self.listen_host
            )
        except CannotListenError:
            return defer.fail()
        return defer.succeed(self.port)

    @property
    def port(self) -> int:
        """The bound listening port (after ``start``)."""
        if self._listener is None:
            raise RuntimeError("FaultProxy is not started")
        return int(self._listener.getHost().port)  # type: ignore[attr-defined]

    def start_control(self, port: int = 0, host: str = "127.0.0.1") -> Deferred[int]:
        """Serve the JSON control API; fires with its port (also ``control_port``)."""
        if self._control is None:
            site = Site(_ControlResource(self))
            site.noisy = False
            try:
                self._control = self.reactor.listenTCP(port, site, interface=host)
            except CannotListenError:
                return defer.fail()
        return defer.succeed(self.control_port)

    @property
    def control_port(self) -> int:
        if self._control is None:
            raise RuntimeError("control API is not started")
        return int(self._control.getHost().port)  # type: ignore[attr-defined]

    def stop(self) -> Deferred[None]:
        """Stop listening (proxy and control API) and abort every open connection."""
        waits: list[Deferred[Any]] = []
        for listener in (self._listener, self._control):
            if listener is not None:
                result = listener.stopListening()
                if isinstance(result, Deferred):
                    waits.append(result)
        self._listener = self._control = None
        for conn in list(self._connections.values()):
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
        if toxic.name in self._toxics:
            raise DuplicateToxicError(f"toxic {toxic.name!r} already exists")
        self._toxics[toxic.name] = toxic
        self._stats.toxics[toxic.name] = {"applied": 0, "skipped": 0}
        for conn in list(self._connections.values()):
            conn.add_toxic(toxic)
        return toxic

    def remove_toxic(self, name: str) -> None:
        """Remove a toxic; data it holds on open connections is passed on at once."""
        toxic = self._toxics.pop(name, None)
        if toxic is None:
            raise ToxicNotFoundError(f"no toxic named {name!r}")
        self._stats.toxics.pop(name, None)
        for conn in list(self._connections.values()):
            conn.remove_toxic(toxic)

    def reset(self) -> None:
        """Remove every toxic (Toxiproxy's ``POST /reset``)."""
        for name in list(self._toxics):
            self.remove_toxic(name)

    def toxics(self) -> list[Toxic]:
        """Current toxics in the order they were added."""
        return list(self._toxics.values())

    def get_toxic(self, name: str) -> Toxic:
        try:
            return self._toxics[name]
        except KeyError:
            raise ToxicNotFoundError(f"no toxic named {name!r}") from None

    def stats(self) -> ProxyStats:
        """A snapshot copy of the counters."""
        s = self._stats
        return ProxyStats(
            connections_total=s.connections_total,
            connections_active=len(self._connections),
            upstream_connect_failures=s.upstream_connect_failures,
            resets=s.resets,
            upstream=DirectionStats(**asdict(s.upstream)),
            downstream=DirectionStats(**asdict(s.downstream)),
            toxics={name: dict(counts) for name, counts in s.toxics.items()},
        )

    # ---- internals used by _Connection
    def _register(self, conn: _Connection) -> int:
        self._next_id += 1
        self._connections[self._next_id] = conn
        self._stats.connections_total += 1
        return self._next_id

    def _unregister(self, conn: _Connection) -> None:
        self._connections.pop(conn.id, None)

    def _decide(self, conn_id: int, toxic: Toxic) -> bool:
        """Does ``toxic`` apply to connection ``conn_id``? Seeded, order-independent."""
        if toxic.toxicity >= 1.0:
            applies = True
        elif toxic.toxicity <= 0.0:
            applies = False
        else:
            rng = random.Random(f"{self.seed}:{conn_id}:{toxic.name}")
            applies = rng.random() < toxic.toxicity
        counts = self._stats.toxics.get(toxic.name)
        if counts is not None:
            counts["applied" if applies else "skipped"] += 1
        return applies


# --------------------------------------------------------------------------- control API


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _ControlResource(Resource):
    """Toxiproxy-like JSON API for one proxy (no ``/proxies/{name}`` prefix)."""

    isLeaf = True
    _ROUTES: ClassVar[dict[str, tuple[str, ...]]] = {
        "/": ("GET",),
        "/toxics": ("GET", "POST"),
        "/toxics/*": ("GET", "DELETE"),
        "/reset": ("POST",),
        "/stats": ("GET",),
    }

    def __init__(self, proxy: FaultProxy) -> None:
        super().__init__()
        self.proxy = proxy

    def render(self, request: Request) -> bytes:
        try:
            status, body = self._dispatch(request)
        except _HttpError as e:
            status, body = e.status, {"error": e.message, "status": e.status}
        except InvalidToxicError as e:
            status, body = 400, {"error": str(e), "status": 400}
        except ToxicNotFoundError as e:
            status, body = 404, {"error": e.args[0], "status": 404}
        except DuplicateToxicError as e:
            status, body = 409, {"error": str(e), "status": 409}
        request.setResponseCode(status)
        if body is None:
            return b""
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(body).encode() + b"\n"

    def _dispatch(self, request: Request) -> tuple[int, Any]:
        method = (request.method or b"").decode("ascii", "replace")
        path = unquote((request.path or b"/").decode("utf-8", "replace"))
        route = "/toxics/*" if path.startswith("/toxics/") else path.rstrip("/") or "/"
        allowed = self._ROUTES.get(route)
        if allowed is None:
            raise _HttpError(404, f"no such endpoint: {path}")
        if method not in allowed:
            raise _HttpError(405, f"method {method} not allowed on {route}")
        proxy = self.proxy
        if route == "/":
            return 200, {
                "listen": f"{proxy.listen_host}:{proxy.port if proxy._listener else None}",
                "upstream": f"{proxy.upstream[0]}:{proxy.upstream[1]}",
                "seed": proxy.seed,
                "toxics": [t.to_json() for t in proxy.toxics()],
            }
        if route == "/toxics" and method == "GET":
            return 200, [t.to_json() for t in proxy.toxics()]
        if route == "/toxics":
            return 200, proxy.install(Toxic.from_json(self._json_body(request))).to_json()
        if route == "/toxics/*":
            name = path[len("/toxics/") :]
            if method == "GET":
                return 200, proxy.get_toxic(name).to_json()
            proxy.remove_toxic(name)
            return 204, None
        if route == "/reset":
            proxy.reset()
            return 204, None
        return 200, proxy.stats().as_dict()

    @staticmethod
    def _json_body(request: Request) -> object:
        assert request.content is not None
        raw = request.content.read(MAX_CONTROL_BODY + 1)
        if len(raw) > MAX_CONTROL_BODY:
            raise _HttpError(413, f"body larger than {MAX_CONTROL_BODY} bytes")
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise _HttpError(400, f"body is not valid JSON: {e}") from None


# --------------------------------------------------------------------------- CLI


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> ``(host, port)``; ValueError if bad."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port must be an integer in {text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535 in {text!r}")
    if not host:
        raise ValueError(f"empty host in {text!r}")
    return host, port


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _address_arg(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _toxic_arg(text: str) -> Toxic:
    try:
        return parse_toxic_spec(text)
    except InvalidToxicError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netfault",
        description="TCP fault proxy with Toxiproxy toxics (latency, bandwidth, slicer, ...).",
    )
    parser.add_argument(
        "--listen",
        type=_address_arg,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="address to accept clients on (default 127.0.0.1:0 = free port)",
    )
    parser.add_argument(
        "--upstream",
        type=_address_arg,
        required=True,
        metavar="HOST:PORT",
        help="server to forward to",
    )
    parser.add_argument(
        "--control",
        type=_address_arg,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="address of the JSON control API (default 127.0.0.1:0)",
    )
    parser.add_argument("--no-control", action="store_true", help="do not serve the control API")
    parser.add_argument(
        "--toxic",
        type=_toxic_arg,
        action="append",
        default=[],
        metavar="TYPE[:STREAM[:K=V,...]]",
        help="add a toxic at start, e.g. 'latency:downstream:latency=100,jitter=10' "
        "(keys name= and toxicity= are accepted too); repeatable",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for toxicity/jitter/slicing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``netfault``. Exit 2 on bad arguments, 1 if binding fails."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    names = [t.name for t in args.toxic]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        parser.error(f"duplicate toxic name(s): {', '.join(duplicates)} (use name=...)")

    from twisted.internet import reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    # Only problems go to stderr; stdout stays the two parseable lines.
    errors_only = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [errors_only])],
        redirectStandardIO=False,
    )
    listen_host, listen_port = args.listen
    proxy = FaultProxy(
        listen_port=listen_port,
        upstream=args.upstream,
        seed=args.seed,
        reactor=reactor,
        listen_host=listen_host,
    )
    for toxic in args.toxic:
        proxy.install(toxic)
    exit_code = [0]

    def fail(message: str) -> None:
        print(f"netfault: {message}", file=sys.stderr, flush=True)
        exit_code[0] = 1
        reactor.stop()

    def started() -> None:
        try:
            proxy_port = _bind(proxy.start())
            print(f"listening on {_format_address(listen_host, proxy_port)}", flush=True)
            if not args.no_control:
                control_host, control_port = args.control
                bound = _bind(proxy.start_control(control_port, control_host))
                print(f"control on http://{_format_address(control_host, bound)}", flush=True)
        except CannotListenError as e:
            fail(f"cannot listen: {e}")

    reactor.callWhenRunning(started)
    reactor.addSystemEventTrigger("before", "shutdown", proxy.stop)
    reactor.run()  # SIGINT/SIGTERM stop it
    return exit_code[0]


def _bind(d: Deferred[int]) -> int:
    """The result of an already-fired Deferred (``start``/``start_control`` are sync)."""
    box: list[int] = []
    failures: list[Failure] = []
    d.addCallbacks(box.append, failures.append)
    if failures:
        failures[0].raiseException()
    return box[0]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
