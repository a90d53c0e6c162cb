"""The chaos runner's plan: which request, which fault, what an honest end looks like.

Pure code, no I/O. ``generate_plans(settings, seed, n)`` draws every random choice of a
run from one ``random.Random(seed)``, request after request, so request ``i`` of a
seed is the same whatever ``--requests`` and ``--concurrency`` are: ``--only-request i``
replays the draws of requests ``0..i`` and runs only the last one.

Each ``RequestPlan`` carries its primary fault *kind* (a row of the report), the
``X-Fault`` SPEC for the fake upstream, an optional netfault toxic, an optional client
disconnect, and what the judge needs: the deterministic text the fake generates
(``expected_text``), the number of events of a complete stream, whether the fault
must end the response with an error (``expect``) and the time it may take.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.fake_llama.generate import DEFAULT_N_CTX, plan_generation

__all__ = [
    "CHAT",
    "COMPLETIONS",
    "DIRECT",
    "EITHER",
    "FAIL",
    "KINDS",
    "LANE",
    "MANAGED",
    "NET_KINDS",
    "SUCCEED",
    "KindInfo",
    "PlanSettings",
    "RequestPlan",
    "ToxicPlan",
    "generate_plan",
    "generate_plans",
    "stream_events",
]

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"

# Routes: an external alias straight to a fake, the managed alias (server_core's own
# child), or a netfault lane (an external alias whose upstream is a FaultProxy).
DIRECT = "direct"
MANAGED = "managed"
LANE = "lane"

# What the fault must do to the response.
SUCCEED = "succeed"  # done with the whole text (or disconnected, when the client leaves)
FAIL = "fail"  # an honest error: http_error or error_event; done is a violation
EITHER = "either"  # done with the whole text, or an honest error


@dataclass(frozen=True)
class KindInfo:
    """A fault kind of the mix: its weight and what the run must offer for it."""

    weight: float
    needs: str = ""  # "" | "idle_timeout" | "header_timeout" | "managed" | "lanes"
    doc: str = ""


# The whole vocabulary. Weights are relative; ``--kinds`` restricts the mix.
KINDS: dict[str, KindInfo] = {
    "clean": KindInfo(12, doc="no fault"),
    "ttft": KindInfo(5, doc="time to first token"),
    "token_delay": KindInfo(6, doc="per-token delay + jitter"),
    "split_utf8": KindInfo(3, doc="every event in two writes, split inside a UTF-8 character"),
    "crlf": KindInfo(3, doc="CRLF line endings"),
    "duplicate": KindInfo(3, doc="one event sent twice (duplicate_after)"),
    "malformed": KindInfo(3, doc="one `data: {not json` event (malformed_after)"),
    "stall": KindInfo(3, needs="idle_timeout", doc="stall_after: silence, socket open"),
    "close": KindInfo(4, doc="close_after: clean end of the body without [DONE]"),
    "drop": KindInfo(2, doc="drop_after: FIN in the middle of the chunked body"),
    "reset": KindInfo(4, doc="reset_after: TCP RST"),
    "error": KindInfo(4, doc="error_after: mid-stream error event"),
    "legacy_error": KindInfo(3, doc="legacy_error_after: `error:` line then [DONE]"),
    "status": KindInfo(3, doc="status=N before any byte"),
    "hang": KindInfo(2, needs="header_timeout", doc="hang: no byte ever"),
    "crash": KindInfo(1.5, needs="managed", doc="crash_after on the managed alias"),
    "disconnect": KindInfo(4, doc="the client leaves after N events"),
    "net_latency": KindInfo(2, needs="lanes", doc="netfault latency + jitter"),
    "net_bandwidth": KindInfo(1, needs="lanes", doc="netfault bandwidth"),
    "net_slicer": KindInfo(2, needs="lanes", doc="netfault slicer"),
    "net_slow_close": KindInfo(1, needs="lanes", doc="netfault slow_close"),
    "net_reset_peer": KindInfo(2, needs="lanes", doc="netfault reset_peer"),
    "net_limit_data": KindInfo(2, needs="lanes", doc="netfault limit_data"),
    "net_timeout": KindInfo(1, needs="lanes", doc="netfault timeout"),
}
NET_KINDS = frozenset(k for k in KINDS if k.startswith("net_"))

# Terminal faults: the first of these that matches an event number ends the stream.
_TERMINAL = {
    "stall": "stall_after",
    "close": "close_after",
    "drop": "drop_after",
    "reset": "reset_after",
    "error": "error_after",
    "legacy_error": "legacy_error_after",
    "crash": "crash_after",
}
_STATUSES = (400, 401, 404, 429, 500, 501, 503)
_WORDS = ("river", "lantern", "café", "granite", "comet", "日本", "meadow", "quartz", "🚀")


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
    n_ctx: int = DEFAULT_N_CTX  # per-slot context of the fakes
    idle_timeout: float | None = None  # the server's upstream idle timeout (stall)
    header_timeout: float | None = None  # the server's upstream header timeout (hang)
    delay_scale: float = 1.0  # multiplies every injected delay
    margin: float = 5.0  # seconds of slack on every deadline
    managed_margin: float = 15.0  # extra slack on the managed alias (restarts)

    def enabled_kinds(self) -> list[str]:
        """The kinds of the mix that this run can exercise, in table order."""
        offered = {
            "": True,
            "idle_timeout": self.idle_timeout is not None and self.header_timeout is not None,
            "header_timeout": self.header_timeout is not None,
            "managed": self.managed_alias is not None,
            "lanes": self.lanes > 0,
        }
        wanted = set(self.kinds)
        return [k for k, info in KINDS.items() if k in wanted and offered[info.needs]]


@dataclass(frozen=True)
class ToxicPlan:
    """One netfault toxic, added to the lane for the time of one request."""

    type: str
    stream: str
    attributes: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        attrs = ",".join(f"{k}={v}" for k, v in sorted(self.attributes.items()))
        return f"{self.type}:{self.stream}:{attrs}"


@dataclass(frozen=True)
class RequestPlan:
    """One request of a run and what an honest end of it looks like."""

    index: int
    kind: str
    route: str  # DIRECT | MANAGED | LANE
    alias: str | None  # None for LANE (a free lane is picked at run time)
    endpoint: str  # CHAT | COMPLETIONS
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

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    def describe(self) -> str:
        """One line: kind, route, stream, SPEC, toxic, disconnect."""
        parts = [
            self.kind,
            self.route if self.alias is None else f"{self.route}:{self.alias}",
            "stream" if self.stream else "json",
            "chat" if self.endpoint == CHAT else "completions",
        ]
        if self.spec:
            parts.append(f"X-Fault: {self.spec}")
        if self.toxic:
            parts.append(f"toxic {self.toxic.describe()}")
        if self.disconnect_after is not None:
            parts.append(f"disconnect_after={self.disconnect_after}")
        return " | ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "route": self.route,
            "alias": self.alias,
            "endpoint": self.endpoint,
            "stream": self.stream,
            "spec": self.spec,
            "toxic": None if self.toxic is None else self.toxic.describe(),
            "disconnect_after": self.disconnect_after,
            "expect": self.expect,
            "skippable": self.skippable,
            "tokens": len(self.tokens),
            "n_events": self.n_events,
            "deadline": round(self.deadline, 3),
        }


def stream_events(endpoint: str, n_tokens: int, include_usage: bool) -> int:
    """Data events of a complete fake stream, ``[DONE]`` included (the fake's counting
    rule): chat = role chunk + tokens + finish chunk (+ usage chunk) + [DONE];
    completions = tokens + final chunk + [DONE]."""
    if endpoint == CHAT:
        return n_tokens + 3 + (1 if include_usage else 0)
    return n_tokens + 2


def _ms(seconds: float) -> str:
    return f"{max(0, round(seconds * 1000))}ms"


def generate_plans(settings: PlanSettings, seed: int, n: int) -> list[RequestPlan]:
    """Plans of requests ``0..n-1``, every choice drawn from ``random.Random(seed)``."""
    rng = random.Random(seed)
    kinds = settings.enabled_kinds()
    if not kinds:
        raise ValueError("no fault kind is enabled for this run")
    weights = [KINDS[k].weight for k in kinds]
    return [_draw(settings, rng, seed, i, kinds, weights) for i in range(n)]


def generate_plan(settings: PlanSettings, seed: int, index: int) -> RequestPlan:
    """Plan ``index`` of a seed (replays the draws of the requests before it)."""
    return generate_plans(settings, seed, index + 1)[index]


def _draw(
    s: PlanSettings,
    rng: random.Random,
    seed: int,
    index: int,
    kinds: Sequence[str],
    weights: Sequence[float],
) -> RequestPlan:
    kind = rng.choices(kinds, weights)[0]
    scale = s.delay_scale

    # -- route --------------------------------------------------------------------
    alias: str | None
    if kind == "crash":
        route, alias = MANAGED, s.managed_alias
    elif kind in NET_KINDS:
        route, alias = LANE, None
    elif s.managed_alias is not None and rng.random() < s.managed_ratio:
        route, alias = MANAGED, s.managed_alias
    else:
        route, alias = DIRECT, rng.choice(s.aliases)

    # -- body ---------------------------------------------------------------------
    stream = kind in ("disconnect", "duplicate", "crlf") or rng.random() < s.stream_ratio
    endpoint = CHAT if rng.random() < 0.85 else COMPLETIONS
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))
    prompt = f"chaos {seed} request {index}: {words}"
    body: dict[str, Any] = {"model": alias or ""}
    if endpoint == CHAT:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    body["stream"] = stream
    if rng.random() < 0.7:
        body["max_tokens"] = rng.randint(1, 24)
    include_usage = stream and endpoint == CHAT and rng.random() < 0.2
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    gen = plan_generation(body, s.fake_seed, n_ctx=s.n_ctx)
    tokens = gen.tokens
    n_tok = len(tokens)
    n_events = stream_events(endpoint, n_tok, include_usage) if stream else 0

    # -- faults -------------------------------------------------------------------
    items: list[str] = []
    ttft = token_delay = jitter = 0.0
    delay = 0.0
    expect = SUCCEED
    alt_text: str | None = None
    toxic: ToxicPlan | None = None
    disconnect: int | None = None
    closes = kills = False

    def count_fault() -> tuple[int, bool]:
        """An event count N for an ``X_after`` fault, and whether it triggers."""
        if stream:
            n = rng.randint(0, n_events - 1) if rng.random() < 0.85 else n_events
            return n, n < n_events
        n = rng.randint(0, n_tok) if rng.random() < 0.85 else n_tok + rng.randint(1, 2)
        return n, n <= n_tok

    if kind == "ttft":
        ttft = rng.uniform(0.02, 0.3) * scale
    elif kind == "token_delay":
        token_delay = rng.uniform(0.002, 0.02) * scale
        jitter = rng.uniform(0.0, token_delay)
    elif kind in ("split_utf8", "crlf"):
        items.append(kind)
    elif kind == "duplicate":
        n = rng.randint(1, n_events)
        items.append(f"duplicate_after={n}")
        alt_text = _duplicated_text(endpoint, tokens, n)
    elif kind == "malformed":
        n = rng.randint(1, n_events) if stream else rng.randint(0, n_tok)
        items.append(f"malformed_after={n}")
        if not stream:
            expect = FAIL  # half a JSON body: nothing honest can be made of it
        elif n < n_events:
            expect = EITHER  # a relay may drop the garbage event or end with an error
    elif kind in _TERMINAL:
        n, triggers = count_fault()
        items.append(f"{_TERMINAL[kind]}={n}")
        # N == the last event still acts, right after [DONE]: invisible to this request,
        # not to the requests that share the connection pool or the process.
        acts = n <= n_events if stream else n <= n_tok
        closes = acts and kind in ("close", "drop", "reset")
        kills = acts and kind == "crash"
        if triggers:
            expect = FAIL
            if kind == "stall":
                # Stream: the server's idle timeout ends it; non-stream: no headers ever.
                assert s.idle_timeout is not None and s.header_timeout is not None
                delay += s.idle_timeout if stream else s.header_timeout
    elif kind == "status":
        items.append(f"status={rng.choice(_STATUSES)}")
        expect = FAIL
    elif kind == "hang":
        items.append("hang")
        expect = FAIL
        assert s.header_timeout is not None
        delay += s.header_timeout
    elif kind == "disconnect":
        disconnect = rng.randint(1, n_events)
    elif kind in NET_KINDS:
        toxic, extra, expect = _draw_toxic(kind, rng, n_events or 2 + n_tok, s)
        delay += extra
        closes = kind == "net_limit_data"

    # Benign modifiers on top of a fault, so faults are also seen on slow streams.
    if kind not in ("clean", "ttft", "token_delay") and rng.random() < 0.3:
        token_delay = rng.uniform(0.001, 0.008) * scale
    if kind not in ("clean", "split_utf8", "crlf") and kind not in NET_KINDS:
        if stream and rng.random() < 0.1:
            items.append("split_utf8")
        if stream and rng.random() < 0.1:
            items.append("crlf")
    if ttft:
        items.insert(0, f"ttft={_ms(ttft)}")
    if token_delay:
        items.append(f"token_delay={_ms(token_delay)}")
        if jitter:
            items.append(f"jitter={_ms(jitter)}")
    skippable = False
    if expect in (FAIL, EITHER) and items and rng.random() < 0.08:
        items.append("p=0.5")
        skippable = True

    # Rounded to whole ms in the SPEC; count what the fake will really wait.
    ttft_ms = round(ttft * 1000) / 1000
    gap_ms = (round(token_delay * 1000) + round(jitter * 1000)) / 1000
    delay += ttft_ms + n_tok * gap_ms
    deadline = delay + s.margin + (s.managed_margin if route == MANAGED else 0.0)
    return RequestPlan(
        index=index,
        kind=kind,
        route=route,
        alias=alias,
        endpoint=endpoint,
        body=body,
        spec=",".join(dict.fromkeys(items)),
        toxic=toxic,
        disconnect_after=disconnect,
        expect=expect,
        skippable=skippable,
        tokens=tuple(tokens),
        finish_reason=gen.finish_reason,
        alt_text=alt_text,
        n_events=n_events,
        delay=delay,
        deadline=deadline,
        closes_connection=closes,
        kills_process=kills,
    )


def _duplicated_text(endpoint: str, tokens: Sequence[str], n: int) -> str | None:
    """The text when data event ``n`` reaches the client twice (a relay that passes
    upstream events through as they are), or None when event ``n`` carries no text."""
    first_token_event = 2 if endpoint == CHAT else 1
    k = n - first_token_event
    if 0 <= k < len(tokens):
        return "".join(tokens[: k + 1]) + "".join(tokens[k:])
    return None


def _draw_toxic(
    kind: str, rng: random.Random, n_events: int, s: PlanSettings
) -> tuple[ToxicPlan, float, str]:
    """A toxic for a lane: (toxic, seconds it may add, expectation)."""
    scale = s.delay_scale
    approx_bytes = 400 * n_events + 400  # headers + events; generous
    if kind == "net_latency":
        latency = int(rng.uniform(5, 60) * scale)
        jitter = rng.randint(0, latency // 2)
        stream = rng.choice(("downstream", "upstream"))
        # Every chunk is late by at most latency + jitter; order is kept, so the whole
        # response is late by about that once (plus queueing behind late chunks).
        extra = 2 * (latency + jitter) / 1000.0 * 4
        return ToxicPlan("latency", stream, {"latency": latency, "jitter": jitter}), extra, SUCCEED
    if kind == "net_bandwidth":
        rate = rng.randint(20, 200)  # KB/s
        extra = approx_bytes / (rate * 1000.0) * 2 + 0.2
        return ToxicPlan("bandwidth", "downstream", {"rate": rate}), extra, SUCCEED
    if kind == "net_slicer":
        avg = rng.randint(4, 64)
        var = rng.randint(0, avg - 1)
        delay_us = rng.randint(0, 300)
        extra = approx_bytes / max(1, avg - var) * delay_us / 1e6 * 2
        attrs = {"average_size": avg, "size_variation": var, "delay": delay_us}
        return ToxicPlan("slicer", "downstream", attrs), extra, SUCCEED
    if kind == "net_slow_close":
        delay_ms = int(rng.uniform(20, 300) * scale)
        return ToxicPlan("slow_close", "downstream", {"delay": delay_ms}), delay_ms / 1000, SUCCEED
    if kind == "net_reset_peer":
        timeout = rng.choice((0, rng.randint(1, 200)))
        stream = rng.choice(("downstream", "upstream"))
        toxic = ToxicPlan("reset_peer", stream, {"timeout": timeout})
        return toxic, timeout / 1000, FAIL
    if kind == "net_limit_data":
        limit = rng.randint(60, 3000)
        return ToxicPlan("limit_data", "downstream", {"bytes": limit}), 0.0, EITHER
    assert kind == "net_timeout"
    timeout = rng.choice((0, rng.randint(1, 500)))
    # timeout=0 never closes: the server's header timeout has to end it.
    extra = timeout / 1000 if timeout else (s.header_timeout or 0.0)
    return ToxicPlan("timeout", "downstream", {"timeout": timeout}), extra, FAIL
