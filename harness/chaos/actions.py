"""What the runner does around one request of the later kinds, besides sending it.

* ``live_fault``: ``POST /_fault`` the plan's SPEC on the live fake, send the request
  without ``X-Fault``, ``DELETE /_fault`` after; one such request at a time (the live
  set applies to every request the fake gets).
* ``freeze``: look the managed child's pid up in ``GET /running``, SIGSTOP it when the
  client has seen ``freeze_after`` data events, SIGCONT it once the response ended (so
  the requests after it find a working child, unless server_core's liveness probe has
  failed it and started a fresh one). Freezes may overlap: the child runs again when
  the last of them ended (one at a time would make a run as long as all of them). A
  freeze that could not be applied (no child was running, it was replaced meanwhile) is
  reported, and the runner judges the request as one that may succeed; so does a
  freeze that came too late (the relay passed the rest of the stream on in one burst:
  the child had written it all).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer

from harness.chaos.plan import RequestPlan
from harness.client import DONE, StreamResult, stream_request
from harness.fake_llama import parse_faults
from server_core.sse import Event

__all__ = ["Freeze", "OnEvent", "SideActions"]

OnEvent = Callable[[Event, float], None]
Send = Callable[[OnEvent | None], Awaitable[StreamResult]]


class SideActions:
    """The live-fault and freeze actions of a run (``server_url``: server_core;
    ``live_url``: the live fake, None when the run has none)."""

    def __init__(self, reactor: Any, server_url: str, live_url: str | None) -> None:
        self.reactor = reactor
        self.server_url = server_url
        self.live_url = live_url
        self._live = defer.DeferredLock()
        self._stops = _Stops()

    async def send(self, plan: RequestPlan, send: Send) -> tuple[StreamResult, bool]:
        """Send ``plan`` with its actions; (result, whether a planned freeze happened)."""
        if plan.live_spec:
            return await self._send_live(plan, send), False
        if plan.freeze_after is not None:
            return await self._send_frozen(plan, send)
        return await send(None), False

    async def _send_live(self, plan: RequestPlan, send: Send) -> StreamResult:
        assert self.live_url is not None
        await self._live.acquire()
        try:
            await self._fault(method="POST", body={"spec": plan.live_spec})
            try:
                return await send(None)
            finally:
                await self._fault(method="DELETE", body=None)
        finally:
            self._live.release()

    async def _fault(self, *, method: str, body: dict[str, str] | None) -> None:
        r = await stream_request(
            f"{self.live_url}/_fault", body, method=method, timeout=5.0, reactor=self.reactor
        )
        if r.status != 200:
            raise RuntimeError(f"{method} /_fault -> {r.status} {r.summary()}")

    async def _send_frozen(self, plan: RequestPlan, send: Send) -> tuple[StreamResult, bool]:
        freeze = Freeze(plan, await self._managed_pid(plan.alias), self._stops)

        def on_event(event: Event, t: float) -> None:
            if freeze.pid is None and freeze.seen == 0 and event.data is not None:
                # No child before the request (a crash): it runs now, ask again.
                d = defer.ensureDeferred(self._managed_pid(plan.alias))
                d.addCallback(freeze.found)
            freeze.on_event(event, self.reactor.seconds())

        try:
            result = await send(on_event)
        finally:
            freeze.thaw()
        return result, freeze.applied(result)

    async def _managed_pid(self, alias: str | None) -> int | None:
        """The pid of ``alias``'s child as ``GET /running`` reports it (None: none)."""
        r = await stream_request(
            self.server_url + "/running", None, method="GET", timeout=5.0, reactor=self.reactor
        )
        body = r.json_body if isinstance(r.json_body, dict) else {}
        for row in body.get("data", []):
            if isinstance(row, dict) and row.get("alias") == alias and row.get("pid"):
                return int(row["pid"])
        return None


class Freeze:
    """One freeze: SIGSTOP ``pid`` once ``plan.freeze_after`` data events arrived."""

    def __init__(self, plan: RequestPlan, pid: int | None, stops: _Stops | None = None) -> None:
        self.plan = plan
        self.pid = pid
        self.stops = stops or _Stops()
        self.seen = 0
        self.frozen_at: float | None = None
        self.last_at: float | None = None  # the last data event's arrival
        self._stopped: int | None = None

    def found(self, pid: int | None) -> None:
        """The pid, looked up again once the stream had begun."""
        self.pid = pid

    def on_event(self, event: Event, now: float) -> None:
        """Count data events; stop the child at the planned one (or the first after
        it once its pid is known)."""
        if event.data is None:
            return
        self.seen += 1
        self.last_at = now
        if self._stopped is not None or self.pid is None:
            return
        if self.seen >= (self.plan.freeze_after or 0):
            if not self.stops.stop(self.pid):
                self.pid = None  # gone: the freeze did not happen
                return
            self._stopped, self.frozen_at = self.pid, now

    def thaw(self) -> None:
        """SIGCONT the stopped child (it may have been failed and killed meanwhile)."""
        if self._stopped is not None:
            self.stops.cont(self._stopped)
            self._stopped = None

    def applied(self, result: StreamResult) -> bool:
        """Whether the child was stopped while it still owed the stream something.

        A relay under load may pass a stream on in bursts: when every event after the
        stop arrived within half a token gap of it, the child had written them all
        before it was stopped, and the freeze came too late to cut anything.
        """
        if self.frozen_at is None:
            return False
        if result.outcome != DONE or self.last_at is None:
            return True
        gap = parse_faults(self.plan.spec).token_delay
        return self.last_at - self.frozen_at >= gap / 2


class _Stops:
    """Stopped pids, counted: freezes may overlap (the next one begins while the child
    is still stopped), and the child runs again only when the last of them ended."""

    def __init__(self) -> None:
        self._count: dict[int, int] = {}

    def stop(self, pid: int) -> bool:
        """SIGSTOP ``pid`` (once for overlapping freezes); False when it is gone."""
        if not self._count.get(pid):
            try:
                os.kill(pid, signal.SIGSTOP)
            except OSError:
                return False
        self._count[pid] = self._count.get(pid, 0) + 1
        return True

    def cont(self, pid: int) -> None:
        """One freeze of ``pid`` ended: SIGCONT it when it was the last."""
        self._count[pid] -= 1
        if self._count[pid] == 0:
            del self._count[pid]
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass  # failed and killed by server_core meanwhile
