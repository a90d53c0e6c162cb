"""A fixed pool of generation slots (``-np N``) with a FIFO wait queue."""

from __future__ import annotations

from collections import deque

from twisted.internet.defer import Deferred, succeed

__all__ = ["SlotPool"]


class SlotPool:
    """``acquire()`` gives the lowest free slot id, or queues; never rejects.

    Cancelling a pending ``acquire()`` Deferred removes it from the queue, so a
    client that leaves while queued never takes a slot.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a slot pool needs at least one slot")
        self.size = size
        self._free = list(range(size))
        self._waiting: deque[Deferred[int]] = deque()
        self.task_of: dict[int, int] = {}  # slot id -> task id (for /slots)

    @property
    def busy(self) -> int:
        return self.size - len(self._free)

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def is_busy(self, slot: int) -> bool:
        return slot not in self._free

    def acquire(self) -> Deferred[int]:
        if self._free and not self._waiting:
            self._free.sort()
            return succeed(self._free.pop(0))

        def cancel(d: Deferred[int]) -> None:
            try:
                self._waiting.remove(d)
            except ValueError:
                pass

        d: Deferred[int] = Deferred(cancel)
        self._waiting.append(d)
        return d

    def release(self, slot: int) -> None:
        self.task_of.pop(slot, None)
        if self._waiting:
            # Hand the slot straight to the next waiter (FIFO).
            self._waiting.popleft().callback(slot)
        else:
            self._free.append(slot)
