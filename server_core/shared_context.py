"""DefaultSharedContext: which llama-server processes run, and who may use them.

A request gets a *lease* on a ready server for its alias and holds it until its
response has ended. Leases decide everything else:

- a server with leases is never stopped by a swap, an idle timeout or an eviction;
- requests for a model that is starting join that start (one process per alias);
- at most ``max_loaded`` servers run; a different model waits for the least
  recently used idle server to stop;
- waiting requests are served in arrival order: requests that arrived before a
  waiting swap are served, later ones queue behind it, so neither side starves.

Everything is driven by one ``_pump`` that grants what can be granted whenever
something changes (a request, a release, a process becoming ready or stopping).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from server_core.aliases import LocalAlias
from server_core.errors import ContextError, ServerCoreError, internal_error
from server_core.interfaces import ILease, IServerProcess, ISharedContext, IStateListener
from server_core.template_check import TemplateProbe, TemplateVerdict

__all__ = ["ContextLimits", "DefaultSharedContext", "Lease", "ProcessFactory"]

log = Logger()

ProcessFactory = Callable[[LocalAlias, Callable[[Any, str, str], None]], IServerProcess]
"""Builds the process for an alias; the callable passed in receives state changes."""


@dataclass(frozen=True)
class ContextLimits:
    max_loaded: int = 1
    ttl: float = 300.0  # -1 never, 0 right after the last lease ends
    max_queue: int = 64
    queue_timeout: float = 300.0
    max_concurrent_per_alias: int | None = None
    retry_after: int = 5  # seconds suggested to clients turned away


class TooManyRequests(ContextError):
    status = 429
    type = "rate_limit_error"
    code = "too_many_requests"


class QueueFull(ContextError):
    status = 503
    code = "queue_full"


class QueueTimeout(ContextError):
    status = 503
    code = "queue_timeout"


@implementer(ILease)
class Lease:
    """The right to use one ready server until ``release``."""

    def __init__(self, slot: _Slot, context: DefaultSharedContext) -> None:
        self._slot = slot
        self._context = context
        self._released = False
        self.alias = slot.alias.name
        self.base_url: str = slot.process.base_url
        verdict = slot.template
        self.chat_template_error: str | None = (
            verdict.detail if verdict is not None and verdict.ok is False else None
        )

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._context._release(self._slot)

    def when_lost(self) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        if self._slot.lost:
            d.callback(None)
        else:
            self._slot.lost_waiters.append(d)
        return d


@dataclass(eq=False)
class _Slot:
    """One alias's process and its bookkeeping."""

    alias: LocalAlias
    process: IServerProcess
    leases: int = 0
    last_used: float = 0.0
    draining: bool = False  # no new leases; stop once the last one ends
    lost: bool = False
    idle_timer: IDelayedCall | None = None
    stopping: defer.Deferred[Any] | None = None
    started: defer.Deferred[None] | None = None
    requests: int = 0
    last_error: str | None = None
    probing: bool = False  # ready, but its chat template is still being checked
    template: TemplateVerdict | None = None
    lost_waiters: list[defer.Deferred[None]] = field(default_factory=list)
    stop_waiters: list[defer.Deferred[Any]] = field(default_factory=list)

    @property
    def state(self) -> str:
        return str(self.process.state)

    @property
    def ready(self) -> bool:
        return self.state == "ready" and not self.draining and not self.probing


@dataclass(eq=False)
class _Waiter:
    alias: LocalAlias
    deferred: defer.Deferred[Lease]
    enqueued_at: float
    timer: IDelayedCall | None = None


@implementer(ISharedContext)
class DefaultSharedContext:
    """Starts, shares, swaps and stops llama-server processes (see module doc)."""

    def __init__(
        self,
        process_factory: ProcessFactory,
        *,
        clock: IReactorTime,
        limits: ContextLimits,
        template_probe: TemplateProbe | None = None,
    ) -> None:
        self._factory = process_factory
        self._template_probe = template_probe
        self._clock = clock
        self._limits = limits
        self._slots: dict[str, _Slot] = {}
        self._queue: list[_Waiter] = []
        self._listeners: list[IStateListener] = []
        self._last_errors: dict[str, str] = {}
        self._closing = False
        self.starts = 0  # processes spawned, for tests and /running

    # -- ISharedContext -----------------------------------------------------------

    def acquire(self, alias: LocalAlias) -> defer.Deferred[Lease]:
        if self._closing:
            return defer.fail(ContextError("The server is shutting down; retry the request."))
        limit = self._limits.max_concurrent_per_alias
        if limit is not None:
            slot = self._slots.get(alias.name)
            in_use = (slot.leases if slot else 0) + sum(
                1 for w in self._queue if w.alias.name == alias.name
            )
            if in_use >= limit:
                return defer.fail(
                    TooManyRequests(
                        f"The model '{alias.name}' already serves {limit} requests at once; "
                        "retry later.",
                        headers={"Retry-After": str(self._limits.retry_after)},
                    )
                )
        # Fast path: nothing queued and the server is ready.
        slot = self._slots.get(alias.name)
        if not self._queue and slot is not None and slot.ready:
            return defer.succeed(self._grant(slot))
        if len(self._queue) >= self._limits.max_queue:
            return defer.fail(
                QueueFull(
                    f"Too many requests are waiting for a model ({self._limits.max_queue}); "
                    "retry later.",
                    headers={"Retry-After": str(self._limits.retry_after)},
                )
            )
        waiter = _Waiter(alias, defer.Deferred(self._cancel_waiter), self._clock.seconds())
        if self._limits.queue_timeout > 0:
            waiter.timer = self._clock.callLater(
                self._limits.queue_timeout, self._waiter_timed_out, waiter
            )
        self._queue.append(waiter)
        self._pump()
        return waiter.deferred

    def reload(self, alias: LocalAlias | None = None) -> defer.Deferred[None]:
        """Restart one alias (after its leases end), or stop all when ``alias`` is None."""

        async def go() -> None:
            if alias is None:
                await self.stop()
                return
            await self.stop(alias.name)
            lease = await self.acquire(alias)
            lease.release()

        return defer.ensureDeferred(go())

    def stop(self, alias_name: str | None = None, *, force: bool = False) -> defer.Deferred[None]:
        """Stop one alias's server (or all) once its leases have ended.

        ``force`` stops at once even with leases (server shutdown, after the drain).
        """
        names = [alias_name] if alias_name is not None else list(self._slots)
        waits = []
        for name in names:
            slot = self._slots.get(name)
            if slot is None:
                continue
            slot.draining = True
            if slot.leases == 0 or force:
                waits.append(self._stop_slot(slot, reason="requested"))
            else:
                waits.append(self._when_stopped(slot))
        return defer.gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)

    def close(self) -> defer.Deferred[None]:
        """Shutdown: refuse new requests, fail waiters, stop every process now."""
        self._closing = True
        for waiter in list(self._queue):
            self._fail_waiter(waiter, ContextError("The server is shutting down."))
        return self.stop(force=True)

    def is_loaded(self, alias_name: str) -> bool:
        slot = self._slots.get(alias_name)
        return slot is not None and slot.state == "ready"

    def add_state_listener(self, listener: IStateListener) -> None:
        self._listeners.append(listener)

    def running(self) -> list[dict[str, Any]]:
        now = self._clock.seconds()
        out = []
        for name, slot in sorted(self._slots.items()):
            proc: Any = slot.process
            started_at = getattr(proc, "started_at", None)
            out.append(
                {
                    "alias": name,
                    "state": "draining" if slot.draining and slot.state == "ready" else slot.state,
                    "pid": proc.pid,
                    "port": proc.port,
                    "uptime": round(now - started_at, 3) if started_at is not None else None,
                    "in_flight": slot.leases,
                    "waiting": sum(1 for w in self._queue if w.alias.name == name),
                    "requests": slot.requests,
                    "last_error": slot.last_error or self._last_errors.get(name),
                    "chat_template": slot.template.status if slot.template else None,
                    "chat_template_detail": slot.template.detail if slot.template else None,
                }
            )
        return out

    def process_for(self, alias_name: str) -> IServerProcess | None:
        slot = self._slots.get(alias_name)
        return slot.process if slot else None

    # -- the scheduler --------------------------------------------------------------

    def _pump(self) -> None:
        """Grant, start or evict for waiters in arrival order (see module doc)."""
        if self._closing:
            return
        for waiter in list(self._queue):
            if waiter.deferred.called:
                continue
            name = waiter.alias.name
            slot = self._slots.get(name)
            if slot is not None and slot.ready:
                self._dequeue(waiter)
                waiter.deferred.callback(self._grant(slot))
                continue
            if slot is not None:
                # Starting: join that start. Stopping or draining: wait for it to end,
                # without holding up requests for other models that have room.
                continue
            if self._loaded() < self._limits.max_loaded:
                self._start(waiter.alias)
                continue
            victim = self._eviction_candidate()
            if victim is not None:
                self._stop_slot(victim, reason=f"swap to '{name}'")
            # Everyone behind a waiting swap queues behind it (no starvation).
            break

    def _loaded(self) -> int:
        return len(self._slots)

    def _eviction_candidate(self) -> _Slot | None:
        idle = [
            s
            for s in self._slots.values()
            if s.leases == 0 and s.state in ("ready", "failed") and s.stopping is None
        ]
        if any(s.stopping is not None for s in self._slots.values()):
            return None  # one swap at a time: wait for the stop under way
        return min(idle, key=lambda s: s.last_used) if idle else None

    def _grant(self, slot: _Slot) -> Lease:
        self._cancel_idle(slot)
        slot.leases += 1
        slot.requests += 1
        slot.last_used = self._clock.seconds()
        self._notify("request", slot.alias.name, {"in_flight": slot.leases})
        return Lease(slot, self)

    def _release(self, slot: _Slot) -> None:
        slot.leases -= 1
        slot.last_used = self._clock.seconds()
        if slot.leases == 0 and self._slots.get(slot.alias.name) is slot:
            if slot.draining:
                self._stop_slot(slot, reason="requested")
            else:
                self._arm_idle(slot)
        self._pump()

    # -- processes ------------------------------------------------------------------

    def _start(self, alias: LocalAlias) -> None:
        holder: list[_Slot] = []

        def on_state(proc: Any, old: str, new: str) -> None:
            if holder:
                self._process_state(holder[0], old, new)

        try:
            process = self._factory(alias, on_state)
        except Exception as exc:
            # Nothing could be spawned (no executable, bad flags): fail this alias's
            # waiters only; the scheduler itself must never raise.
            error = (
                exc
                if isinstance(exc, ServerCoreError)
                else internal_error(exc, f"building the process for '{alias.name}'")
            )
            self._last_errors[alias.name] = error.message
            self._notify("failed", alias.name, {"error": error.message})
            for waiter in list(self._queue):
                if waiter.alias.name == alias.name:
                    self._fail_waiter(waiter, error)
            return
        slot = _Slot(alias, process, last_used=self._clock.seconds())
        holder.append(slot)
        self._slots[alias.name] = slot
        self.starts += 1
        self._notify("start", alias.name, {})
        slot.started = defer.maybeDeferred(process.start)
        slot.started.addCallbacks(
            lambda _: self._started(slot), lambda f: self._start_failed(slot, f)
        )

    def _started(self, slot: _Slot) -> None:
        if self._slots.get(slot.alias.name) is not slot:
            return
        if self._template_probe is None:
            self._became_ready(slot)
            return
        # One probe per start, before the first lease: a chat request must never be
        # answered by a model whose template dropped its messages.
        slot.probing = True
        probe = defer.maybeDeferred(self._template_probe, slot.alias.name, slot.process.base_url)
        probe.addBoth(lambda verdict: self._probed(slot, verdict))

    def _probed(self, slot: _Slot, verdict: TemplateVerdict | Failure) -> None:
        slot.probing = False
        if isinstance(verdict, Failure):
            log.failure("checking the chat template of {alias}", verdict, alias=slot.alias.name)
            verdict = TemplateVerdict(None, "the chat template could not be checked")
        slot.template = verdict
        if verdict.ok is False:
            log.error(
                "{alias}: {detail}; its chat requests are refused until the alias is fixed",
                alias=slot.alias.name,
                detail=verdict.detail,
            )
        elif verdict.ok is None:
            log.warn("{alias}: {detail}", alias=slot.alias.name, detail=verdict.detail)
        if self._slots.get(slot.alias.name) is slot and slot.state == "ready":
            self._became_ready(slot)

    def _became_ready(self, slot: _Slot) -> None:
        self._notify("ready", slot.alias.name, {"port": getattr(slot.process, "port", None)})
        if slot.leases == 0:
            self._arm_idle(slot)
        self._pump()

    def _start_failed(self, slot: _Slot, failure: Failure) -> None:
        if slot.draining:
            # We stopped it ourselves (unload while loading): not a failure of the model.
            # Whoever still waits for it gets a fresh start once it is gone.
            return
        error = failure.value
        if not isinstance(error, ServerCoreError):
            log.failure("starting {alias} failed", failure, alias=slot.alias.name)
            error = ContextError(f"The model '{slot.alias.name}' failed to start.")
        message = error.message if isinstance(error, ServerCoreError) else str(error)
        slot.last_error = message
        self._last_errors[slot.alias.name] = message
        self._notify("failed", slot.alias.name, {"error": message})
        self._forget(slot)
        for waiter in list(self._queue):
            if waiter.alias.name == slot.alias.name:
                self._fail_waiter(waiter, error)
        self._pump()

    def _process_state(self, slot: _Slot, old: str, new: str) -> None:
        """A ready server that dies is noticed here at once (process exit)."""
        if new == "failed" and old == "ready":
            message = f"The model '{slot.alias.name}' server exited unexpectedly."
            slot.last_error = message
            self._last_errors[slot.alias.name] = message
            log.warn("{alias}: server exited while ready", alias=slot.alias.name)
            self._notify("failed", slot.alias.name, {"error": message})
            self._mark_lost(slot)
            self._forget(slot)
            self._pump()

    def _stop_slot(self, slot: _Slot, *, reason: str) -> defer.Deferred[Any]:
        if slot.stopping is not None:
            return self._when_stopped(slot)
        waiter = self._when_stopped(slot)
        self._cancel_idle(slot)
        slot.draining = True
        log.info("stopping {alias} ({reason})", alias=slot.alias.name, reason=reason)
        slot.stopping = defer.maybeDeferred(slot.process.stop)

        def stopped(result: Any) -> None:
            if isinstance(result, Failure):
                log.failure("stopping {alias} failed", result, alias=slot.alias.name)
            self._mark_lost(slot)
            self._forget(slot)
            self._notify("stop", slot.alias.name, {"reason": reason})
            self._pump()

        slot.stopping.addBoth(stopped)
        return waiter

    def _when_stopped(self, slot: _Slot) -> defer.Deferred[Any]:
        """A fresh Deferred firing once this slot's process is gone."""
        d: defer.Deferred[Any] = defer.Deferred()
        if self._slots.get(slot.alias.name) is not slot:
            d.callback(None)
        else:
            slot.stop_waiters.append(d)
        return d

    def _forget(self, slot: _Slot) -> None:
        self._cancel_idle(slot)
        if self._slots.get(slot.alias.name) is slot:
            del self._slots[slot.alias.name]
        waiters, slot.stop_waiters = slot.stop_waiters, []
        for d in waiters:
            d.callback(None)

    def _mark_lost(self, slot: _Slot) -> None:
        if not slot.lost:
            slot.lost = True
            waiters, slot.lost_waiters = slot.lost_waiters, []
            for d in waiters:
                d.callback(None)

    # -- idle TTL -----------------------------------------------------------------------

    def _ttl(self, slot: _Slot) -> float:
        return slot.alias.ttl if slot.alias.ttl is not None else self._limits.ttl

    def _arm_idle(self, slot: _Slot) -> None:
        self._cancel_idle(slot)
        ttl = self._ttl(slot)
        if ttl < 0 or math.isinf(ttl) or slot.state != "ready":
            return
        slot.idle_timer = self._clock.callLater(ttl, self._idle_expired, slot)

    def _idle_expired(self, slot: _Slot) -> None:
        slot.idle_timer = None
        if slot.leases == 0 and self._slots.get(slot.alias.name) is slot:
            self._stop_slot(slot, reason=f"idle for {self._ttl(slot):g} s")

    def _cancel_idle(self, slot: _Slot) -> None:
        if slot.idle_timer is not None and slot.idle_timer.active():
            slot.idle_timer.cancel()
        slot.idle_timer = None

    # -- waiters ------------------------------------------------------------------------

    def _dequeue(self, waiter: _Waiter) -> None:
        if waiter in self._queue:
            self._queue.remove(waiter)
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()
        waiter.timer = None

    def _fail_waiter(self, waiter: _Waiter, error: Exception) -> None:
        self._dequeue(waiter)
        if not waiter.deferred.called:
            waiter.deferred.errback(error)

    def _waiter_timed_out(self, waiter: _Waiter) -> None:
        waiter.timer = None
        self._fail_waiter(
            waiter,
            QueueTimeout(
                f"Waited {self._limits.queue_timeout:g} s for the model "
                f"'{waiter.alias.name}' without getting a turn; retry later.",
                headers={"Retry-After": str(self._limits.retry_after)},
            ),
        )
        self._pump()

    def _cancel_waiter(self, d: defer.Deferred[Lease]) -> None:
        # The client left while waiting: leave the queue, nothing else changes.
        for waiter in list(self._queue):
            if waiter.deferred is d:
                self._dequeue(waiter)
        self._clock.callLater(0, self._pump)

    # -- listeners ------------------------------------------------------------------------

    def _notify(self, event: str, alias: str, detail: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            try:
                listener.on_state_change(event, alias, detail)
            except Exception:
                log.failure(
                    "state listener failed on {event} for {alias}", event=event, alias=alias
                )
