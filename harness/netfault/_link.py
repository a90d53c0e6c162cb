"""One direction of one proxied connection: source socket -> toxic stages -> sink.

The link owns the chain of stages (``_stage``, ``_toxic_stages``) for its direction,
edits it when toxics are added or removed at runtime, counts bytes, and does the flow
control between its two sockets: it pauses the source socket while the sink socket is
full or the stages hold more than ``HIGH_WATER`` bytes, and resumes it below
``LOW_WATER``, so memory stays bounded when a toxic holds data back.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

from twisted.internet.interfaces import IPushProducer, IReactorTime
from zope.interface import implementer

from harness.netfault._stage import Pipe, Stage
from harness.netfault._stats import DirectionStats
from harness.netfault._toxic import Toxic
from harness.netfault._toxic_stages import STAGES

# Bytes held inside one direction's toxics before the source socket is paused; it is
# resumed below the low mark. Keeps memory bounded when a toxic holds data back.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024

# A connected TCP transport: ITCPTransport + IConsumer + IPushProducer. Protocol
# types ``transport`` as plain ITransport, which lacks most of what is used here.
Transport = Any


class LinkOwner(Protocol):
    """What a link needs from its connection (``_connection.Connection``)."""

    id: int

    def source_lost(self, link: Link) -> bool:
        """Is the socket ``link`` reads from gone?"""

    def reset(self) -> None:
        """Tear both sockets down with a TCP RST (``reset_peer``)."""


class Sink(Pipe):
    """End of a link: the destination socket."""

    def __init__(self, link: Link, transport: Transport) -> None:
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
class Link:
    """One direction of one proxied connection: source socket -> toxics -> sink.

    It is the streaming producer of the sink transport: when the sink's buffer is
    full, or the toxics hold more than HIGH_WATER bytes, the source socket is paused.
    """

    def __init__(
        self,
        conn: LinkOwner,
        stream: str,
        source: Transport,
        sink: Transport,
        stats: DirectionStats,
        *,
        clock: IReactorTime,
        seed: int,
    ) -> None:
        self.conn = conn
        self.stream = stream
        self.clock = clock
        self.seed = seed
        self.source = source
        self.stats = stats
        self.sink = Sink(self, sink)
        self.stages: list[Stage] = []
        self.ended = False
        self._held = 0
        self._sink_paused = False
        self._source_paused = False
        self._rngs: dict[str, random.Random] = {}

    # ---- data path
    @property
    def head(self) -> Pipe:
        """Where data read from the source goes first."""
        return self.stages[0] if self.stages else self.sink

    def push(self, data: bytes) -> None:
        """Data read from the source socket."""
        self.stats.bytes_in += len(data)
        if self.ended:
            self.dropped(len(data))
            return
        self.head.write(data)

    def end(self) -> None:
        """The source socket closed: the end-of-stream goes down the chain."""
        if not self.ended:
            self.ended = True
            self.head.end()

    def dropped(self, n: int) -> None:
        """Count ``n`` bytes swallowed on this link."""
        self.stats.bytes_dropped += n

    def held(self, delta: int) -> None:
        """The stages hold ``delta`` bytes more (or fewer); pause or resume the source."""
        self._held += delta
        self._update_source()

    def rng_for(self, toxic: Toxic) -> random.Random:
        """Randomness for jitter/slicing, reproducible per (seed, connection, toxic)."""
        rng = self._rngs.get(toxic.name)
        if rng is None:
            rng = random.Random(f"{self.seed}:{self.conn.id}:{toxic.name}:data")
            self._rngs[toxic.name] = rng
        return rng

    def reset_connection(self) -> None:
        """``reset_peer`` fired: RST both sockets of this link's connection."""
        self.conn.reset()

    # ---- chain edits
    def add(self, toxic: Toxic, applies: bool) -> None:
        """Append a toxic at the end of the chain (Toxiproxy's order)."""
        cls = STAGES[toxic.type] if applies else Stage
        stage = cls(toxic, self, self.sink)
        if self.stages:
            self.stages[-1].out = stage
        self.stages.append(stage)

    def remove(self, name: str) -> None:
        """Take the toxic out of the chain; what it held is passed on at once."""
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
        """The connection is finished: stop every stage's timers."""
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
        """The sink socket's buffer is full."""
        self._sink_paused = True
        self._update_source()

    def resumeProducing(self) -> None:
        """The sink socket's buffer drained."""
        self._sink_paused = False
        self._update_source()

    def stopProducing(self) -> None:
        # The sink transport is going away; Connection handles the teardown.
        pass
