"""Lease: the right to use one ready server until the response using it has ended.

A lease is what keeps a server alive: while one is held, no swap, idle timeout or
eviction stops that server. It is handed out only by a slot in its ``ready`` phase.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from zope.interface import implementer

from server_core.interfaces import ILease
from server_core.shared_context._slot import Slot

__all__ = ["Lease"]


@implementer(ILease)
class Lease:
    """The right to use one ready server until ``release``."""

    def __init__(self, slot: Slot, on_release: Callable[[Slot], None]) -> None:
        self._slot = slot
        self._on_release = on_release
        self._released = False
        self.alias = slot.name
        self.base_url: str = slot.process.base_url
        verdict = slot.template
        self.chat_template_error: str | None = (
            verdict.detail if verdict is not None and verdict.ok is False else None
        )

    def release(self) -> None:
        """Give the server back (idempotent): the last release may let it stop."""
        if not self._released:
            self._released = True
            self._on_release(self._slot)

    def when_lost(self) -> defer.Deferred[None]:
        """A fresh Deferred firing once the leased server is gone (died or stopped)."""
        return self._slot.when_gone()
