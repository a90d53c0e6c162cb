"""What a llama-server child printed: the kept lines, their followers, the safe excerpt.

Every line (stdout and stderr, all runs) goes to the Twisted log tagged with the alias,
into a ring of the last lines (``GET /logs/{alias}``) and to the followers
(``?follow=1``). A failed start tells the client the last few error-like lines, and only
those that name no path: llama-server prints model paths, which clients must not see.
"""

from __future__ import annotations

import contextlib
import re
from collections import deque
from collections.abc import Callable, Iterable

from twisted.logger import Logger

__all__ = ["OutputLog", "client_safe_lines"]

log = Logger()

_ERRORISH = re.compile(r"error|fail|cannot|invalid|unknown|abort|exception|out of memory", re.I)


def client_safe_lines(lines: Iterable[str], limit: int = 3) -> list[str]:
    """The last ``limit`` error-like output lines that name no path (clients see these)."""
    picked = [
        " ".join(line.split())[:200]
        for line in lines
        if _ERRORISH.search(line) and "/" not in line and "\\" not in line
    ]
    return picked[-limit:]


class OutputLog:
    """The last ``keep`` lines of one alias's children, and who follows new ones."""

    def __init__(self, alias: str, keep: int) -> None:
        self.alias = alias
        self._lines: deque[str] = deque(maxlen=max(1, keep))
        self._listeners: list[Callable[[str], None]] = []

    def add(self, line: str) -> None:
        """Keep, log and hand ``line`` to every follower (a broken one changes nothing)."""
        self._lines.append(line)
        log.info("[{alias}] {line}", alias=self.alias, line=line)
        for listener in list(self._listeners):
            try:
                listener(line)
            except Exception:
                log.failure("[{alias}] log listener failed", alias=self.alias)

    def recent(self) -> list[str]:
        """The kept lines, oldest first."""
        return list(self._lines)

    def follow(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(line)`` for every future line."""
        self._listeners.append(listener)

    def unfollow(self, listener: Callable[[str], None]) -> None:
        """Stop calling ``listener``; one that never followed is ignored."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)
