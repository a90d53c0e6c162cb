"""The batching policy's questions, answered from the queue, the slots and the clock.

``context._pump`` acts (grants, starts, swaps); these pure functions decide in what order
it looks at the waiters, which waiter may stop a model others still want, and which idle
server a swap stops. The reasoning is in ``context``'s module docstring.
"""

from __future__ import annotations

from collections.abc import Iterable

from server_core.shared_context._slot import Slot
from server_core.shared_context._waiters import Waiter, WaitQueue
from server_core.shared_context.limits import ContextLimits

__all__ = ["eviction_candidate", "in_batch", "in_turn", "urgent"]


def in_turn(queue: WaitQueue, now: float, limits: ContextLimits) -> list[Waiter]:
    """The due waiters in arrival order, then the others by priority, then arrival.

    The sort is stable, so each model's requests keep their arrival order; with
    ``max_wait: 0`` everyone is due and this is plain arrival order.
    """
    return sorted(queue, key=lambda w: (now - w.enqueued_at < limits.max_wait, -w.alias.priority))


def urgent(waiter: Waiter, slots: Iterable[Slot], now: float, limits: ContextLimits) -> bool:
    """May ``waiter`` have a loaded model that others still want stopped for it?"""
    wanted = [s for s in slots if not s.stopping]
    for slot in wanted:
        if slot.ready_at is not None and now - slot.ready_at < limits.min_resident:
            return False  # a just-loaded model stays min_resident while it is wanted
    if now - waiter.enqueued_at >= limits.max_wait:
        return True
    return all(waiter.alias.priority > s.alias.priority for s in wanted)


def in_batch(waiter: Waiter, slot: Slot) -> bool:
    """Did ``waiter`` wait for ``slot``'s start (arrive before it was ready)?"""
    return slot.ready_at is not None and waiter.enqueued_at <= slot.ready_at


def eviction_candidate(
    slots: Iterable[Slot], queue: WaitQueue, *, unwanted_only: bool
) -> Slot | None:
    """The idle ready server a swap should stop: one nobody waits for, else the least
    recently used; with ``unwanted_only``, only one nobody waits for."""
    live = list(slots)
    if any(s.stopping for s in live):
        return None  # one swap at a time: wait for the stop under way
    # Only an idle ready server: one still starting or being checked belongs to the
    # waiters that asked for it first.
    idle = [(queue.count(s.name) > 0, s.last_used, s) for s in live if s.evictable]
    if unwanted_only:
        idle = [entry for entry in idle if not entry[0]]
    return min(idle, key=lambda entry: entry[:2])[2] if idle else None
