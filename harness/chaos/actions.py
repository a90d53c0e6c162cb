"""What the runner does around one request of the later kinds, besides sending it.

* ``live_fault``: ``POST /_fault`` the plan's SPEC on the live fake, send the request
  without ``X-Fault``, ``DELETE /_fault`` after; one such request at a time (the live
  set applies to every request the fake gets).
* ``freeze``: look the managed child's pid up in ``GET /running``, SIGSTOP it when the
  client has seen ``freeze_after`` data events, SIGCONT it once the response ended (so
  the requests after it find a working child, unless server_core's liveness probe has
  failed it and started a fresh one); one freeze at a time. A freeze that could not be
  applied (no child was running, it was replaced meanwhile) is reported, and the runner
  judges the request as one that may succeed.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer

from harness.chaos.plan import RequestPlan
from harness.client import StreamResult, stream_request
from server_core.sse import Event

__all__ = ["OnEvent", "SideActions"]

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
        self._freeze = defer.DeferredLock()

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
        await self._freeze.acquire()
        frozen: list[int] = []
        try:
            pid = await self._managed_pid(plan.alias)
            seen = 0

            def found(value: int | None) -> None:
                nonlocal pid
                pid = value

            def on_event(event: Event, t: float) -> None:
                nonlocal seen
                if event.data is None or frozen:
                    return
                seen += 1
                if pid is None and seen == 1:
                    # No child before the request (a crash): it runs now, ask again.
                    defer.ensureDeferred(self._managed_pid(plan.alias)).addCallback(found)
                if seen >= (plan.freeze_after or 0) and pid is not None:
                    try:
                        os.kill(pid, signal.SIGSTOP)
                    except OSError:
                        return  # gone: the freeze did not happen
                    frozen.append(pid)

            try:
                return await send(on_event), bool(frozen)
            finally:
                for p in frozen:
                    try:
                        os.kill(p, signal.SIGCONT)
                    except OSError:
                        pass  # failed and killed by server_core meanwhile
        finally:
            self._freeze.release()

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
