"""Waiting for effects that have no event to await (a counter in another object)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater

reactor: Any = _reactor


async def until(predicate: Callable[[], bool], timeout: float = 3.0) -> float:
    """Poll ``predicate`` on the reactor every 5 ms; return how long it took."""
    start = reactor.seconds()
    while not predicate():
        if reactor.seconds() - start > timeout:
            raise AssertionError("condition not reached in time")
        await deferLater(reactor, 0.005, lambda: None)
    return float(reactor.seconds() - start)
