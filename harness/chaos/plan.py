"""The chaos runner's plan of one request: which fault, what an honest end looks like.

Pure data. Each ``RequestPlan`` carries its primary fault *kind* (a row of the report),
the ``X-Fault`` SPEC for the fake upstream, an optional netfault toxic, an optional
client disconnect, and what the judge needs: the deterministic text the fake generates
(``expected_text``), the number of events of a complete stream (``stream_events``),
whether the fault must end the response with an error (``expect``) and the time it may
take. ``PlanSettings`` is what a run offers (aliases, lanes, timeouts, margins).

Plans are drawn from a seed by ``harness.chaos.draw``; the vocabulary (kinds, routes,
expectations) is in ``harness.chaos.kinds``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.chaos.kinds import (
    CHAT,
    COMPLETIONS,
    KINDS,
    MESSAGES,
    NATIVE,
    OLLAMA_CHAT,
    OLLAMA_GENERATE,
    RESPONSES,
    dialect_of,
)
from harness.chaos.toxics import ToxicPlan

__all__ = ["PlanSettings", "RequestPlan", "first_token_event", "stream_events"]


@dataclass(frozen=True)
class PlanSettings:
    """What the run offers; everything here shapes the draws (and goes into the
    reproduce command)."""

    aliases: tuple[str, ...] = ("chaos-a",)  # direct routes (external aliases / --model)
    managed_alias: str | None = None
    lanes: int = 0  # netfault lanes (0: no network faults)
    kinds: tuple[str, ...] = tuple(KINDS)  # enabled kinds (filtered by what is offered)
    stream_ratio: float = 0.8
    managed_ratio: float = 0.1  # share of non-crash requests sent to the managed alias
    fake_seed: int = 0  # the fakes' --seed (the text depends on it)
    n_ctx: int | None = None  # per-slot context of the fakes (None: the fake's default)
    idle_timeout: float | None = None  # the server's upstream idle timeout (stall)
    header_timeout: float | None = None  # the server's upstream header timeout (hang)
    delay_scale: float = 1.0  # multiplies every injected delay
    margin: float = 5.0  # seconds of slack on every deadline
    managed_margin: float = 15.0  # extra slack on the managed alias (restarts)
    live_alias: str | None = None  # a fake of its own for live /_fault changes
    embed_alias: str | None = None  # a fake started with --embeddings
    # Managed aliases whose child starts with a process fault: alias -> its SPEC.
    startup_aliases: tuple[tuple[str, str], ...] = ()
    freeze: bool = False  # SIGSTOP the managed child mid-stream (needs the managed alias)
    # The request dialects drawn from (kinds.DIALECT_NAMES, in that order); the first
    # mix's two by default, which draw exactly what runs drew before the others existed.
    dialects: tuple[str, ...] = ("chat", "completions")

    def enabled_kinds(self) -> list[str]:
        """The kinds of the mix that this run can exercise, in table order."""
        offered = {
            "": True,
            "idle_timeout": self.idle_timeout is not None and self.header_timeout is not None,
            "header_timeout": self.header_timeout is not None,
            "managed": self.managed_alias is not None,
            "lanes": self.lanes > 0,
            "live": self.live_alias is not None,
            "embeddings": self.embed_alias is not None,
            "startup": bool(self.startup_aliases),
            "freeze": self.freeze
            and self.managed_alias is not None
            and self.idle_timeout is not None,
        }
        wanted = set(self.kinds)
        return [k for k, info in KINDS.items() if k in wanted and offered[info.needs]]


@dataclass(frozen=True)
class RequestPlan:
    """One request of a run and what an honest end of it looks like."""

    index: int
    kind: str
    route: str  # DIRECT | MANAGED | LANE
    alias: str | None  # None for LANE (a free lane is picked at run time)
    endpoint: str  # CHAT | COMPLETIONS | RESPONSES | MESSAGES | NATIVE | OLLAMA_* | EMBEDDINGS
    body: dict[str, Any]
    spec: str  # X-Fault SPEC ("" = no header)
    toxic: ToxicPlan | None
    disconnect_after: int | None
    expect: str  # SUCCEED | FAIL | EITHER
    skippable: bool  # the SPEC has p<1: the fake may skip the whole fault set
    tokens: tuple[str, ...]
    finish_reason: str
    alt_text: str | None  # duplicate_after relayed as-is: the text with one token twice
    n_events: int  # data events of a complete stream ([DONE] included); 0 non-stream
    delay: float  # seconds the faults may add to a healthy answer
    deadline: float  # delay + margins: the response must have ended by then
    # Side effects on others: the upstream may close this request's connection right
    # after a response that looked complete to the HTTP layer (a pooled connection that
    # is about to close), or the upstream process dies with every stream it serves.
    closes_connection: bool = False
    kills_process: bool = False
    freezes_process: bool = False  # the managed child is SIGSTOPped for a while
    # The later kinds: the SPEC set live with POST /_fault instead of X-Fault; the
    # client event after which the runner SIGSTOPs the managed child; the vectors an
    # embeddings request must get back.
    live_spec: str = ""
    freeze_after: int | None = None
    vectors: tuple[tuple[float, ...], ...] = ()

    @property
    def stream(self) -> bool:
        """Whether the request asks for an SSE stream."""
        return bool(self.body.get("stream"))

    @property
    def dialect(self) -> str:
        """The request dialect (``chat``, ``completions``, ``responses``, ``messages``,
        ``native``, ``ollama_chat``, ``ollama_generate``; ``embeddings``), a row of the
        report's dialect table."""
        return dialect_of(self.endpoint)

    @property
    def text(self) -> str:
        """The whole text the fake generates for this request."""
        return "".join(self.tokens)

    def describe(self) -> str:
        """One line: kind, route, stream, SPEC, toxic, disconnect."""
        parts = [
            self.kind,
            self.route if self.alias is None else f"{self.route}:{self.alias}",
            "stream" if self.stream else "json",
            self.dialect,
        ]
        if self.spec:
            parts.append(f"X-Fault: {self.spec}")
        if self.live_spec:
            parts.append(f"POST /_fault: {self.live_spec}")
        if self.freeze_after is not None:
            parts.append(f"SIGSTOP after event {self.freeze_after}")
        if self.toxic:
            parts.append(f"toxic {self.toxic.describe()}")
        if self.disconnect_after is not None:
            parts.append(f"disconnect_after={self.disconnect_after}")
        return " | ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """The plan as the JSON report shows it."""
        return {
            "index": self.index,
            "kind": self.kind,
            "route": self.route,
            "alias": self.alias,
            "endpoint": self.endpoint,
            "dialect": self.dialect,
            "stream": self.stream,
            "spec": self.spec,
            "toxic": None if self.toxic is None else self.toxic.describe(),
            "disconnect_after": self.disconnect_after,
            "expect": self.expect,
            "skippable": self.skippable,
            "tokens": len(self.tokens),
            "n_events": self.n_events,
            "deadline": round(self.deadline, 3),
            "live_spec": self.live_spec,
            "freeze_after": self.freeze_after,
        }


def stream_events(endpoint: str, n_tokens: int, include_usage: bool) -> int:
    """Events of a complete fake stream, the ending included (the fake's counting rule):
    chat = role chunk + tokens + finish chunk (+ usage chunk) + [DONE]; completions =
    tokens + final chunk + [DONE]; native = tokens + the ``stop: true`` event; Responses
    = created, in_progress, output_item.added, content_part.added, a delta per token,
    output_text.done, content_part.done, output_item.done, completed; Anthropic =
    message_start, content_block_start, a delta per token, content_block_stop,
    message_delta, message_stop. Ollama: the *upstream* chat stream server_core asks for
    (with ``include_usage``: role + tokens + finish + usage + [DONE]), since the fake's
    faults count its events; the client sees a line per token and the done line."""
    extra = {
        CHAT: 3 + (1 if include_usage else 0),
        COMPLETIONS: 2,
        NATIVE: 1,
        RESPONSES: 8,
        MESSAGES: 5,
        OLLAMA_CHAT: 4,
        OLLAMA_GENERATE: 4,
    }
    return n_tokens + extra[endpoint]


def first_token_event(endpoint: str) -> int:
    """The number of the event that carries the first token of a fake stream (Ollama:
    of the upstream chat stream, as in ``stream_events``)."""
    firsts = {CHAT: 2, COMPLETIONS: 1, NATIVE: 1, RESPONSES: 5, MESSAGES: 3}
    return firsts.get(endpoint, 2)
