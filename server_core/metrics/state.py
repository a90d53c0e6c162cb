"""What each managed model is doing, heard from the shared context's state events.

``ModelStatus`` is an ``IStateListener``: from ``start``, ``ready``, ``stop``, ``failed``
and ``request`` it keeps each alias's status (``loaded``, ``loading``, ``unloaded``,
``failed`` with the reason) for ``/v1/models`` and the metrics, counts starts, crashes,
start failures and swaps, times each start, and publishes every change as an event.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from server_core.interfaces import IStateListener

__all__ = ["FAILED", "LOADED", "LOADING", "UNLOADED", "ModelStatus", "StateSink"]

LOADED = "loaded"
LOADING = "loading"
UNLOADED = "unloaded"
FAILED = "failed"
STATES = (LOADED, LOADING, UNLOADED, FAILED)


class StateSink(Protocol):
    """Where ``ModelStatus`` reports what it counts (``ServerMetrics``)."""

    def model_started(self, alias: str) -> None: ...

    def model_ready(self, alias: str, seconds: float) -> None: ...

    def model_failed(self, alias: str, *, crashed: bool) -> None: ...

    def model_swapped_out(self, alias: str) -> None: ...

    def queue_wait(self, alias: str, seconds: float) -> None: ...

    def publish(self, event: dict[str, Any]) -> None: ...


@implementer(IStateListener)
class ModelStatus:
    """Each managed alias's status, kept from the context's events (see module doc)."""

    def __init__(self, sink: StateSink, clock: IReactorTime, aliases: Iterable[str] = ()) -> None:
        self._sink = sink
        self._clock = clock
        self._status: dict[str, dict[str, Any]] = {name: {"value": UNLOADED} for name in aliases}
        self._start_at: dict[str, float] = {}

    def aliases(self) -> list[str]:
        """Every managed alias known so far, configured or heard of."""
        return sorted(self._status)

    def of(self, alias: str) -> dict[str, Any]:
        """``{"value": STATUS}``, plus ``"reason"`` when it failed (a copy)."""
        return dict(self._status.get(alias) or {"value": UNLOADED})

    def value(self, alias: str) -> str:
        return str((self._status.get(alias) or {"value": UNLOADED})["value"])

    def on_state_change(self, event: str, alias: str, detail: dict[str, Any]) -> None:
        handler = getattr(self, "_on_" + event, None)
        if handler is not None:
            handler(alias, detail)

    def _set(self, alias: str, value: str, *, reason: str | None = None, **told: Any) -> None:
        """Keep ``alias``'s status (with the reason it failed), and tell the listeners."""
        kept: dict[str, Any] = {"value": value}
        if reason is not None and value == FAILED:
            kept["reason"] = reason
        self._status[alias] = kept
        if reason is not None:
            told["reason"] = reason
        self._sink.publish({"type": "state", "alias": alias, "status": value, **told})

    def _on_start(self, alias: str, detail: dict[str, Any]) -> None:
        self._start_at[alias] = self._clock.seconds()
        self._sink.model_started(alias)
        self._set(alias, LOADING)

    def _on_ready(self, alias: str, detail: dict[str, Any]) -> None:
        started = self._start_at.pop(alias, None)
        seconds = None if started is None else self._clock.seconds() - started
        if seconds is not None:
            self._sink.model_ready(alias, seconds)
        self._set(alias, LOADED, start_seconds=seconds)

    def _on_failed(self, alias: str, detail: dict[str, Any]) -> None:
        # A failure after ready is a crash (or a hang killed); before it, a failed start.
        crashed = self.value(alias) == LOADED
        self._start_at.pop(alias, None)
        self._sink.model_failed(alias, crashed=crashed)
        self._set(alias, FAILED, reason=str(detail.get("error") or "unknown"))

    def _on_stop(self, alias: str, detail: dict[str, Any]) -> None:
        reason = str(detail.get("reason") or "")
        self._start_at.pop(alias, None)
        if reason.startswith("swap to "):
            self._sink.model_swapped_out(alias)
            to = reason[len("swap to ") :].strip("'")
            self._sink.publish({"type": "swap", "alias": alias, "to": to})
        if self.value(alias) != FAILED:
            self._set(alias, UNLOADED, reason=reason)

    def _on_request(self, alias: str, detail: dict[str, Any]) -> None:
        wait = detail.get("wait")
        if isinstance(wait, int | float):
            self._sink.queue_wait(alias, float(wait))
        self._sink.publish(
            {"type": "lease", "alias": alias, "in_flight": detail.get("in_flight"), "wait": wait}
        )
