"""The parts a request's draws fill in, shared by ``harness.chaos.draw`` (the first
mix) and ``harness.chaos.draw_extra`` (the kinds added later): the fault-free
``Request`` (route, body, the fake's text) and its ``Faults``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.chaos.kinds import SUCCEED
from harness.chaos.toxics import ToxicPlan

__all__ = ["Faults", "Request"]


@dataclass(frozen=True)
class Request:
    """The fault-free part of a plan: where it goes, its body, what the fake generates."""

    route: str
    alias: str | None
    endpoint: str
    body: dict[str, Any]
    tokens: tuple[str, ...]
    finish_reason: str
    n_events: int

    @property
    def stream(self) -> bool:
        """Whether the body asks for an SSE stream."""
        return bool(self.body["stream"])

    @property
    def n_tok(self) -> int:
        """Tokens the fake generates."""
        return len(self.tokens)


@dataclass
class Faults:
    """The fault part of a plan, filled in draw after draw."""

    items: list[str] = field(default_factory=list)  # X-Fault SPEC items, in order
    ttft: float = 0.0
    token_delay: float = 0.0
    jitter: float = 0.0
    delay: float = 0.0
    expect: str = SUCCEED
    alt_text: str | None = None
    toxic: ToxicPlan | None = None
    disconnect: int | None = None
    closes: bool = False
    kills: bool = False
    skippable: bool = False
    live: bool = False  # the SPEC goes to POST /_fault, not to X-Fault
    freeze_after: int | None = None  # SIGSTOP the managed child after this event
    vectors: tuple[tuple[float, ...], ...] = ()  # what an embeddings request gets
