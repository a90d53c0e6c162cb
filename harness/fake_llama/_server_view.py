"""``ServerView``: what the HTTP routes and generation jobs need of their server.

``FakeServer`` (``server.py``) builds the resource and so depends on the HTTP layer;
the HTTP layer types its server as this protocol instead of importing
``server.py``, so the dependency points one way (mypy checks that ``FakeServer``
fits when it hands itself to the resource).
"""

from __future__ import annotations

from typing import Any, Protocol

from harness.fake_llama.config import FakeConfig, Stats
from harness.fake_llama.faults import Faults
from harness.fake_llama.slots import SlotPool
from harness.fake_llama.templates import ChatTemplate

__all__ = ["Abortable", "ServerView"]


class Abortable(Protocol):
    """A response in flight that the server ends when it stops or crashes."""

    def abort(self) -> None:
        """End now, without counting a client cancel."""


class ServerView(Protocol):
    """The state and actions of one fake server that its requests share."""

    config: FakeConfig
    reactor: Any
    state: str  # "new", "loading", "ready", "failed", "crashed", "stopped"
    stopping: bool
    started_at: float
    stats: Stats
    slots: SlotPool
    jobs: set[Abortable]  # responses in flight
    chat_template: ChatTemplate
    request_defaults: Faults  # the request keys of --fault
    live_faults: Faults | None  # POST /_fault
    request_counter: int  # generation requests so far: seeds each request's RNG
    task_counter: int  # llama-server's task ids (logs, /slots)
    vocab_extra: dict[int, str]  # /tokenize ids of words outside the vocabulary

    def log(self, line: str) -> None:
        """A log line in llama-server style."""

    def debug(self, line: str) -> None:
        """A log line only with ``--verbose``."""

    def crash(self) -> None:
        """The injected process crash (``crash_after``)."""

    def set_live_faults(self, spec: str | Faults | None) -> Faults | None:
        """Replace the live request-fault set."""

    def clear_live_faults(self) -> None:
        """Back to the ``--fault`` defaults."""

    def fault_state(self) -> dict[str, Any]:
        """The fault sets as ``GET /_fault`` shows them."""
