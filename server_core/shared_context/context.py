"""DefaultSharedContext: which llama-server processes run, and who may use them.

A request gets a *lease* on a ready server for its alias and holds it until its
response has ended. Leases decide everything else:

- a server with leases is never stopped by a swap, an idle timeout or an eviction;
- requests for a model that is starting join that start (one process per alias);
- at most ``max_loaded`` servers run; a different model waits for an idle server to
  stop, preferably one nobody waits for, else the least recently used;
- waiting requests are served model by model, with a bound. Loading a model costs
  seconds, so requests for a loaded model are served before a swap, even those that
  arrived after a request for another model: that one waits until no request for the
  loaded model waits, or until it has waited ``max_wait``, whichever comes first. From
  then on it is *due*: requests that arrived before a due swap are served, later ones
  queue behind it, so the loaded model's streams end and the swap happens; the head of
  the queue waits at most ``max_wait`` plus the streams in flight and one swap. A
  model swapped in first serves its *batch*, every request that waited for its start,
  so one start serves them all. ``max_wait: 0`` makes every request due at once and
  serves no batches: that is plain arrival order, a swap per change of model.

Two knobs bend this, both off by default: ``min_resident`` keeps a just-loaded model
from being swapped out for a due request before it has served that long (fewer starts,
longer waits for the others), and an alias's ``priority`` lets its requests become due
at once over a loaded model of lower priority (quicker for it, more starts for the rest;
the lower ones still become due after ``max_wait``, so they do not starve). Within one
model, requests are always served in arrival order.

Everything is driven by one ``_pump`` that grants what can be granted whenever something changes (a
request, a release, a process becoming ready or stopping). Each alias's server is a ``Slot`` whose
lifecycle (starting, probing, ready, draining, stopping, and the ends) is spelled out in ``_slot``;
the waiting requests are a ``WaitQueue`` (``_waiters``); the limits and the errors they raise are
in ``limits``; the waits and swaps ``/running`` shows are counted in ``_stats``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from server_core.aliases import LocalAlias
from server_core.errors import ContextError, ServerCoreError, internal_error
from server_core.interfaces import ILease, IServerProcess, ISharedContext, IStateListener
from server_core.shared_context._policy import eviction_candidate, in_batch, in_turn, urgent
from server_core.shared_context._slot import Slot
from server_core.shared_context._stats import WaitStats, queued_row, slot_row
from server_core.shared_context._waiters import Waiter, WaitQueue
from server_core.shared_context.lease import Lease
from server_core.shared_context.limits import (
    ContextLimits,
    queue_full,
    queue_timeout,
    too_many_requests,
)
from server_core.template_check import TemplateProbe, TemplateVerdict

__all__ = ["DefaultSharedContext", "ProcessFactory"]

log = Logger()

ProcessFactory = Callable[[LocalAlias, Callable[[Any, str, str], None]], IServerProcess]
"""Builds the process for an alias; the callable passed in receives state changes."""


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
        self._slots: dict[str, Slot] = {}  # live slots only: a terminal one is forgotten
        self._queue = WaitQueue(clock)
        self._listeners: list[IStateListener] = []
        self._last_errors: dict[str, str] = {}
        self._closing = False
        self._waits = WaitStats()
        self._alias_starts: dict[str, int] = {}
        self.starts = 0  # processes spawned, for tests and /running
        self.swaps = 0  # servers stopped to make room for another model

    # -- ISharedContext -----------------------------------------------------------

    def acquire(self, alias: LocalAlias) -> defer.Deferred[ILease]:
        """A lease on a ready server for ``alias``, at once or after waiting its turn."""
        if self._closing:
            return defer.fail(ContextError("The server is shutting down; retry the request."))
        if self._at_alias_limit(alias.name):
            return defer.fail(too_many_requests(self._limits, alias.name))
        # Fast path: nothing queued and the server is ready.
        slot = self._slots.get(alias.name)
        if not self._queue and slot is not None and slot.grantable:
            return defer.succeed(cast(ILease, self._grant(slot)))
        if len(self._queue) >= self._limits.max_queue:
            return defer.fail(queue_full(self._limits))
        waiter = self._queue.add(
            alias,
            timeout=self._limits.queue_timeout,
            timed_out=self._waiter_timed_out,
            cancelled=lambda: self._clock.callLater(0, self._pump),
        )
        self._pump()
        return cast("defer.Deferred[ILease]", waiter.deferred)  # Deferred is invariant

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
            if slot.leases == 0 or force:
                waits.append(self._stop_slot(slot, reason="requested"))
                continue
            if slot.grantable:
                slot.drain()
            waits.append(slot.when_gone())
        return defer.gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)

    def close(self) -> defer.Deferred[None]:
        """Shutdown: refuse new requests, fail waiters, stop every process now."""
        self._closing = True
        self._queue.fail_all(ContextError("The server is shutting down."))
        return self.stop(force=True)

    def is_loaded(self, alias_name: str) -> bool:
        """True while that alias's server answers (being checked, ready or draining)."""
        slot = self._slots.get(alias_name)
        return slot is not None and slot.up

    def add_state_listener(self, listener: IStateListener) -> None:
        """Tell ``listener`` of every start, ready, stop, failure and granted request."""
        self._listeners.append(listener)

    def running(self) -> list[dict[str, Any]]:
        """One row per live server, for ``/running``."""
        now = self._clock.seconds()
        errors = self._last_errors
        rows = [slot_row(s, now, errors.get(n), self._columns(n)) for n, s in self._slots.items()]
        # A model nobody runs yet but requests wait for: the next swap, worth seeing.
        queued = {w.alias.name for w in self._queue} - set(self._slots)
        rows += [queued_row(n, errors.get(n), self._columns(n)) for n in queued]
        return sorted(rows, key=lambda row: row["alias"])

    def process_for(self, alias_name: str) -> IServerProcess | None:
        """The live process serving ``alias_name`` (for its logs), if any."""
        slot = self._slots.get(alias_name)
        return slot.process if slot else None

    def _at_alias_limit(self, alias_name: str) -> bool:
        limit = self._limits.max_concurrent_per_alias
        if limit is None:
            return False
        slot = self._slots.get(alias_name)
        in_use = (slot.leases if slot else 0) + self._queue.count(alias_name)
        return in_use >= limit

    def _columns(self, name: str) -> dict[str, Any]:
        counts = {"waiting": self._queue.count(name), "swaps": self.swaps}
        return {**counts, **self._waits.row(name), "starts": self._alias_starts.get(name, 0)}

    # -- the scheduler --------------------------------------------------------------

    def _pump(self) -> None:
        """Grant, start or evict for waiters, model by model up to a bound (see module doc)."""
        if self._closing:
            return
        now = self._clock.seconds()
        behind = False  # behind a due swap
        for waiter in in_turn(self._queue, now, self._limits):
            if waiter.deferred.called:
                continue
            name = waiter.alias.name
            slot = self._slots.get(name)
            # Behind a due swap only a loaded model's batch is still served: the requests
            # that waited for its start, so each swap serves all who waited for it.
            if slot is not None and slot.grantable and (not behind or in_batch(waiter, slot)):
                self._queue.remove(waiter)
                waiter.deferred.callback(self._grant(slot, waiter.enqueued_at))
                continue
            if slot is not None or behind:
                # Starting or probing: join that start. Stopping or draining: wait for it
                # to end, without holding up requests for other models that have room.
                continue
            if len(self._slots) < self._limits.max_loaded:
                self._start(waiter.alias)
                continue
            if not urgent(waiter, self._slots.values(), now, self._limits):
                # Not due yet: the loaded models keep serving their own requests; only a
                # server nobody wants may make room now.
                self._swap(name, unwanted_only=True)
                continue
            self._swap(name, unwanted_only=False)
            # Everyone behind a due swap queues behind it (no starvation), but batches.
            if self._limits.max_wait <= 0:
                break
            behind = True
        # No timer for a waiter becoming due: that matters only while the loaded model
        # has leases (an idle one nobody waits for is evicted anyway), and each end pumps.

    def _swap(self, name: str, *, unwanted_only: bool) -> None:
        """Stop an idle server to make room for ``name``, if there is one to stop."""
        victim = eviction_candidate(self._slots.values(), self._queue, unwanted_only=unwanted_only)
        if victim is not None:
            self.swaps += 1
            self._stop_slot(victim, reason=f"swap to '{name}'")

    def _grant(self, slot: Slot, enqueued_at: float | None = None) -> Lease:
        now = self._clock.seconds()
        slot.granted(now)
        wait = now - (now if enqueued_at is None else enqueued_at)
        self._waits.record(slot.name, wait)
        self._notify("request", slot.name, {"in_flight": slot.leases, "wait": wait})
        return Lease(slot, self._release)

    def _release(self, slot: Slot) -> None:
        slot.released(self._clock.seconds())
        if slot.leases == 0 and self._is_current(slot):
            if slot.draining:
                self._stop_slot(slot, reason="requested")
            else:
                self._arm_idle(slot)
        self._pump()

    def _waiter_timed_out(self, waiter: Waiter) -> None:
        self._queue.fail(waiter, queue_timeout(self._limits, waiter.alias.name))
        self._pump()

    # -- processes ------------------------------------------------------------------

    def _start(self, alias: LocalAlias) -> None:
        holder: list[Slot] = []

        def on_state(proc: Any, old: str, new: str) -> None:
            if holder:
                self._process_state(holder[0], old, new)

        try:
            process = self._factory(alias, on_state)
        except Exception as exc:
            self._cannot_build(alias, exc)
            return
        slot = Slot(alias, process, last_used=self._clock.seconds())
        holder.append(slot)
        self._slots[alias.name] = slot
        self.starts += 1
        self._alias_starts[alias.name] = self._alias_starts.get(alias.name, 0) + 1
        self._notify("start", alias.name, {})
        started = defer.maybeDeferred(process.start)
        started.addCallbacks(lambda _: self._started(slot), lambda f: self._start_failed(slot, f))

    def _cannot_build(self, alias: LocalAlias, exc: Exception) -> None:
        # Nothing could be spawned (no executable, bad flags): fail this alias's
        # waiters only; the scheduler itself must never raise.
        where = f"building the process for '{alias.name}'"
        error = exc if isinstance(exc, ServerCoreError) else internal_error(exc, where)
        self._last_errors[alias.name] = error.message
        self._notify("failed", alias.name, {"error": error.message})
        self._queue.fail_alias(alias.name, error)

    def _started(self, slot: Slot) -> None:
        if not slot.starting:
            return  # stopped or lost meanwhile
        slot.started(probe=self._template_probe is not None)
        if self._template_probe is None:
            self._became_ready(slot)
            return
        # One probe per start, before the first lease: a chat request must never be
        # answered by a model whose template dropped its messages.
        probe = defer.maybeDeferred(self._template_probe, slot.name, slot.process.base_url)
        probe.addBoth(lambda verdict: self._probed(slot, verdict))

    def _probed(self, slot: Slot, verdict: TemplateVerdict | Failure) -> None:
        if isinstance(verdict, Failure):
            log.failure("checking the chat template of {alias}", verdict, alias=slot.name)
            verdict = TemplateVerdict(None, "the chat template could not be checked")
        if verdict.ok is False:
            refused = "{alias}: {detail}; its chat requests are refused until the alias is fixed"
            log.error(refused, alias=slot.name, detail=verdict.detail)
        elif verdict.ok is None:
            log.warn("{alias}: {detail}", alias=slot.name, detail=verdict.detail)
        if slot.probed(verdict):
            self._became_ready(slot)

    def _became_ready(self, slot: Slot) -> None:
        slot.ready_at = self._clock.seconds()
        self._notify("ready", slot.name, {"port": getattr(slot.process, "port", None)})
        if slot.leases == 0:
            self._arm_idle(slot)
        self._pump()

    def _start_failed(self, slot: Slot, failure: Failure) -> None:
        if not slot.starting:
            # We stopped it ourselves (unload while loading): not a failure of the model.
            # Whoever still waits for it gets a fresh start once it is gone.
            return
        error = failure.value
        if not isinstance(error, ServerCoreError):
            log.failure("starting {alias} failed", failure, alias=slot.name)
            error = ContextError(f"The model '{slot.name}' failed to start.")
        self._last_errors[slot.name] = error.message
        self._notify("failed", slot.name, {"error": error.message})
        self._forget(slot)
        slot.failed(error.message)
        self._queue.fail_alias(slot.name, error)
        self._pump()

    def _process_state(self, slot: Slot, old: str, new: str) -> None:
        """A ready server that dies, or is killed as hung, is noticed here at once."""
        if new == "failed" and old == "ready" and not slot.gone:
            # The process says why (a crash, or stopped answering its liveness probe).
            why = getattr(slot.process, "last_error", None)
            message = why or f"The model '{slot.name}' server exited unexpectedly."
            self._last_errors[slot.name] = message
            log.warn("{alias}: server failed while ready: {why}", alias=slot.name, why=message)
            self._notify("failed", slot.name, {"error": message})
            self._forget(slot)
            slot.lost(message)  # tells the leases (when_lost)
            self._pump()

    def _stop_slot(self, slot: Slot, *, reason: str) -> defer.Deferred[None]:
        """Stop ``slot``'s process (once); the Deferred fires when the slot is gone."""
        gone = slot.when_gone()
        if slot.stopping:
            return gone
        slot.stop(reason)
        log.info("stopping {alias} ({reason})", alias=slot.name, reason=reason)
        stopping = defer.maybeDeferred(slot.process.stop)
        stopping.addBoth(self._stopped, slot, reason)
        return gone

    def _stopped(self, result: object, slot: Slot, reason: str) -> None:
        if isinstance(result, Failure):
            log.failure("stopping {alias} failed", result, alias=slot.name)
        self._forget(slot)
        slot.stopped()  # tells the leases (when_lost) and stop()'s callers
        self._notify("stop", slot.name, {"reason": reason})
        self._pump()

    def _is_current(self, slot: Slot) -> bool:
        return self._slots.get(slot.name) is slot

    def _forget(self, slot: Slot) -> None:
        """Drop a slot about to enter a terminal phase, before its waiters hear of it."""
        if self._is_current(slot):
            del self._slots[slot.name]

    # -- idle TTL -----------------------------------------------------------------------

    def keep_alive(self, alias_name: str, seconds: float | None = None) -> float | None:
        """Set (``seconds``) and return the idle TTL of that alias's running server."""
        slot = self._slots.get(alias_name)
        if slot is not None and seconds is not None:
            slot.alias = replace(slot.alias, ttl=seconds)  # this server's, until it stops
            self._arm_idle(slot)  # an idle server's timer restarts; a leased one's at release
        return None if slot is None else self._ttl(slot)

    def _ttl(self, slot: Slot) -> float:
        return slot.alias.ttl if slot.alias.ttl is not None else self._limits.ttl

    def _arm_idle(self, slot: Slot) -> None:
        ttl = self._ttl(slot)
        if ttl < 0 or math.isinf(ttl):
            slot.cancel_idle()
            return
        slot.arm_idle(self._clock, ttl, lambda: self._idle_expired(slot))

    def _idle_expired(self, slot: Slot) -> None:
        if slot.leases == 0 and self._is_current(slot):
            self._stop_slot(slot, reason=f"idle for {self._ttl(slot):g} s")

    # -- listeners ------------------------------------------------------------------------

    def _notify(self, event: str, alias: str, detail: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            try:
                listener.on_state_change(event, alias, detail)
            except Exception:
                failed = "state listener failed on {event} for {alias}"
                log.failure(failed, event=event, alias=alias)
