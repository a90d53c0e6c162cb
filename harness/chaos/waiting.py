"""Waiting on the reactor: ``sleep``, ``poll`` a probe, ``wait_until_gone`` for pids.

The runner and its checks wait for the server to settle (slots idle, client
connections closed, children gone) by polling, never by a fixed sleep.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import defer, task

from harness.chaos.procfs import alive

__all__ = ["poll", "sleep", "wait_until_gone"]


def sleep(reactor: Any, seconds: float) -> defer.Deferred[None]:
    """A Deferred that fires after ``seconds`` on ``reactor``."""
    return task.deferLater(reactor, seconds, lambda: None)


async def poll(
    reactor: Any, probe: Callable[[], Any], timeout: float, interval: float = 0.1
) -> Any:
    """Call ``probe`` (sync or async) until it returns a truthy value or time is up;
    returns the last value."""
    deadline = reactor.seconds() + timeout
    while True:
        value = probe()
        if isinstance(value, defer.Deferred) or hasattr(value, "__await__"):
            value = await value
        if value or reactor.seconds() >= deadline:
            return value
        await sleep(reactor, interval)


async def wait_until_gone(pids: Sequence[int], reactor: Any, timeout: float) -> list[int]:
    """Poll until none of ``pids`` is alive; returns those still alive at ``timeout``."""
    left: list[int] = []

    def gone() -> bool:
        nonlocal left
        left = [p for p in pids if alive(p)]
        return not left

    await poll(reactor, gone, timeout, interval=0.05)
    return left
