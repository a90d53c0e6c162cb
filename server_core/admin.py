"""Admin operations behind ``/running``, ``/unload`` and ``/logs/{alias}``.

Works only through ``ISharedContext`` and ``IServerProcess``; the routes module
calls in here so the HTTP layer never touches processes directly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from twisted.internet import defer

from server_core.errors import NotFound
from server_core.interfaces import IServerProcess, ISharedContext
from server_core.sse import DirectEvent

__all__ = ["AdminApi"]

_FOLLOW_BUFFER = 1000


class AdminApi:
    """What an operator may ask of the shared context."""

    def __init__(self, context: ISharedContext, known_aliases: Callable[[], list[str]]) -> None:
        self._context = context
        self._known = known_aliases

    def running(self) -> dict[str, Any]:
        return {"object": "list", "data": self._context.running()}

    async def unload(self, alias: str | None) -> dict[str, Any]:
        """Stop one alias's server (or all), after the requests it serves have ended."""
        if alias is not None and alias not in self._known() and not self._process(alias):
            raise NotFound(f"No managed model is called '{alias}'.", param="alias")
        # A "queued" row is a model requests wait for with no server: nothing to stop.
        before = {e["alias"] for e in self._context.running() if e["state"] != "queued"}
        await self._context.stop(alias)
        stopped = sorted(before if alias is None else before & {alias})
        return {"unloaded": stopped}

    def _process(self, alias: str) -> IServerProcess | None:
        process: IServerProcess | None = self._context.process_for(alias)
        return process

    def logs(self, alias: str) -> list[str]:
        process = self._process(alias)
        if process is None:
            if alias in self._known():
                return []  # known but not running: no lines yet
            raise NotFound(f"No managed model is called '{alias}'.", param="alias")
        return list(process.recent_logs())

    def follow(self, alias: str) -> AsyncIterator[DirectEvent]:
        """Recent lines, then new ones as the child prints them (SSE through DirectSse)."""
        process = self._process(alias)
        if process is None:
            raise NotFound(
                f"The model '{alias}' is not running; there are no lines to follow.",
                param="alias",
            )
        return _follow(process)


async def _follow(process: IServerProcess) -> AsyncIterator[DirectEvent]:
    pending: deque[str] = deque(maxlen=_FOLLOW_BUFFER)
    wake: list[defer.Deferred[None]] = []
    dropped = 0
    exited = False

    def on_exit(_: object) -> None:
        nonlocal exited
        exited = True
        if wake:
            wake.pop().callback(None)

    def on_line(line: str) -> None:
        nonlocal dropped
        if len(pending) == pending.maxlen:
            dropped += 1  # a slow reader loses the oldest lines, never the server's memory
        pending.append(line)
        if wake:
            wake.pop().callback(None)

    for line in process.recent_logs():
        yield DirectEvent({"line": line})
    process.add_log_listener(on_line)
    process.when_exited().addBoth(on_exit)
    try:
        while True:
            if not pending and exited:
                return  # the process is gone: the stream is complete
            if not pending:
                d: defer.Deferred[None] = defer.Deferred()
                wake.append(d)
                await d
            if dropped:
                yield DirectEvent({"dropped": dropped})
                dropped = 0
            while pending:
                yield DirectEvent({"line": pending.popleft()})
    finally:
        process.remove_log_listener(on_line)
