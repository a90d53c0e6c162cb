"""The stage pipeline's building blocks: what a toxic instance on one link looks like.

A link (``_link.Link``) is ``source socket -> stage -> stage -> ... -> sink``; every
stage is one toxic on one connection and direction. A stage receives ``write`` and
``end`` (end-of-stream) from the one before it and emits them, maybe later or changed,
into ``out``. ``Stage`` passes everything through; ``Scheduled`` is the base of the
toxics that release data on a timer. The concrete toxics are in ``_toxic_stages``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from harness.netfault._toxic import Toxic

# A timer fired for the head item releases everything due within this slack, so float
# rounding between ``seconds() + delay`` computations cannot strand an item.
_EPSILON = 1e-9


def cancel_timer(timer: IDelayedCall | None) -> bool:
    """Cancel ``timer`` if it is still pending; whether it was."""
    if timer is not None and timer.active():
        timer.cancel()
        return True
    return False


class Pipe:
    """Something a stage emits into: the next stage, or the link's sink."""

    def write(self, data: bytes) -> None:
        """Take ``data`` in order after everything written before."""
        raise NotImplementedError

    def end(self) -> None:
        """The stream ends after the data written so far."""
        raise NotImplementedError


class StageHost(Protocol):
    """What a stage needs from the link it sits on (``_link.Link`` is the one host)."""

    clock: IReactorTime

    def dropped(self, n: int) -> None:
        """Count ``n`` bytes swallowed on this link."""

    def held(self, delta: int) -> None:
        """``delta`` more (or, negative, fewer) bytes are held back inside the stages."""

    def rng_for(self, toxic: Toxic) -> random.Random:
        """Randomness for jitter/slicing, reproducible per (seed, connection, toxic)."""

    def reset_connection(self) -> None:
        """Tear the whole connection down with a TCP RST."""


class Stage(Pipe):
    """One toxic instance on one link. The base class passes everything through
    (it is also the no-op used when toxicity rolled "not applied")."""

    def __init__(self, toxic: Toxic, link: StageHost, out: Pipe) -> None:
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


class Scheduled(Stage):
    """FIFO of (due time, piece | None for end-of-stream) released by one timer.

    Subclasses plan each write into timed pieces; due times never decrease, so data
    leaves in order. ``self.free_at`` is the earliest time the next piece may leave.
    """

    def __init__(self, toxic: Toxic, link: StageHost, out: Pipe) -> None:
        super().__init__(toxic, link, out)
        self.queue: deque[tuple[float, bytes | None]] = deque()
        self.free_at = 0.0
        self.timer: IDelayedCall | None = None
        self.cancelled = False

    def plan(self, data: bytes, now: float) -> Iterable[tuple[float, bytes]]:
        """Cut ``data``, arrived at ``now``, into (due time, piece) pairs."""
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

    def detach(self) -> tuple[bytes, bool]:
        cancel_timer(self.timer)
        self.timer = None
        pieces = [piece for _, piece in self.queue if piece is not None]
        eof = any(piece is None for _, piece in self.queue)
        data = b"".join(pieces)
        self.link.held(-len(data))
        self.queue.clear()
        self.cancelled = True
        return data, eof

    def cancel(self) -> None:
        self.detach()
