"""The chaos runner's draws: every plan of a run from one ``random.Random(seed)``.

Pure code, no I/O. ``generate_plans(settings, seed, n)`` draws every random choice of a
run from one ``random.Random(seed)``, request after request, so request ``i`` of a
seed is the same whatever ``--requests`` and ``--concurrency`` are: ``--only-request i``
replays the draws of requests ``0..i`` and runs only the last one (``generate_plan``).

A request is drawn in four steps: its kind, its route and body (what the fake will
generate for it), its primary fault, then benign modifiers. The order of the draws is
part of the contract: changing it changes every seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from harness.chaos.bodies import build_body, draw_endpoint, generation_body
from harness.chaos.draw_extra import (
    LIVE_SUBKINDS,
    draw_embeddings_request,
    draw_new_fault,
    draw_new_route,
)
from harness.chaos.drawn import Faults, Request
from harness.chaos.kinds import (
    CHAT,
    DIRECT,
    EITHER,
    FAIL,
    KINDS,
    LANE,
    MANAGED,
    NET_KINDS,
    NEW_KINDS,
    STARTUP,
)
from harness.chaos.plan import PlanSettings, RequestPlan, first_token_event, stream_events
from harness.chaos.toxics import draw_toxic
from harness.fake_llama import plan_generation

__all__ = ["generate_plan", "generate_plans"]

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


# -- the draws of one request ---------------------------------------------------------


def _draw(
    s: PlanSettings,
    rng: random.Random,
    seed: int,
    index: int,
    kinds: Sequence[str],
    weights: Sequence[float],
) -> RequestPlan:
    kind = rng.choices(kinds, weights)[0]
    if kind == "embeddings":
        req = draw_embeddings_request(s, rng, seed, index)
    else:
        req = _draw_request(s, rng, seed, index, kind)
    faults = Faults()
    if kind == "live_fault":
        # An ordinary fault of the mix, set live on the fake instead of by X-Fault.
        sub = rng.choice(LIVE_SUBKINDS)
        draw_fault(faults, sub, rng, s, req)
        draw_modifiers(faults, sub, rng, s, req)
        faults.live = True
    elif kind in NEW_KINDS:
        draw_new_fault(faults, kind, rng, s, req)
    else:
        draw_fault(faults, kind, rng, s, req)
        draw_modifiers(faults, kind, rng, s, req)
    return _assemble(s, index, kind, req, faults)


def _draw_route(s: PlanSettings, rng: random.Random, kind: str) -> tuple[str, str | None]:
    if kind in NEW_KINDS:
        return draw_new_route(s, rng, kind)
    if kind == "crash":
        return MANAGED, s.managed_alias
    if kind in NET_KINDS:
        return LANE, None
    if s.managed_alias is not None and rng.random() < s.managed_ratio:
        return MANAGED, s.managed_alias
    return DIRECT, rng.choice(s.aliases)


def _draw_request(s: PlanSettings, rng: random.Random, seed: int, index: int, kind: str) -> Request:
    route, alias = _draw_route(s, rng, kind)
    forced = ("disconnect", "duplicate", "crlf", "ping", "freeze")
    stream = kind in forced or rng.random() < s.stream_ratio
    endpoint = draw_endpoint(s.dialects, rng.random(), kind)
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))
    prompt = f"chaos {seed} request {index}: {words}"
    max_tokens = rng.randint(1, 24) if rng.random() < 0.7 else None
    include_usage = stream and endpoint == CHAT and rng.random() < 0.2
    body = build_body(endpoint, alias or "", prompt, max_tokens, stream, include_usage)
    gen_body = generation_body(endpoint, body)
    if s.n_ctx is None:
        gen = plan_generation(gen_body, s.fake_seed)
    else:
        gen = plan_generation(gen_body, s.fake_seed, n_ctx=s.n_ctx)
    tokens = tuple(gen.tokens)
    n_events = stream_events(endpoint, len(tokens), include_usage) if stream else 0
    return Request(route, alias, endpoint, body, tokens, gen.finish_reason, n_events)


def draw_fault(f: Faults, kind: str, rng: random.Random, s: PlanSettings, req: Request) -> None:
    """The primary fault of ``kind``."""
    scale = s.delay_scale
    if kind == "ttft":
        f.ttft = rng.uniform(0.02, 0.3) * scale
    elif kind == "token_delay":
        f.token_delay = rng.uniform(0.002, 0.02) * scale
        f.jitter = rng.uniform(0.0, f.token_delay)
    elif kind in ("split_utf8", "crlf"):
        f.items.append(kind)
    elif kind == "duplicate":
        n = rng.randint(1, req.n_events)
        f.items.append(f"duplicate_after={n}")
        f.alt_text = _duplicated_text(req.endpoint, req.tokens, n)
    elif kind == "malformed":
        _draw_malformed(f, rng, req)
    elif kind in _TERMINAL:
        _draw_terminal(f, kind, rng, s, req)
    elif kind == "status":
        f.items.append(f"status={rng.choice(_STATUSES)}")
        f.expect = FAIL
    elif kind == "hang":
        f.items.append("hang")
        f.expect = FAIL
        assert s.header_timeout is not None
        f.delay += s.header_timeout
    elif kind == "disconnect":
        f.disconnect = rng.randint(1, req.n_events)
    elif kind in NET_KINDS:
        f.toxic, extra, f.expect = draw_toxic(
            kind,
            rng,
            req.n_events or 2 + req.n_tok,
            delay_scale=scale,
            header_timeout=s.header_timeout,
        )
        f.delay += extra
        f.closes = kind == "net_limit_data"


def _draw_malformed(f: Faults, rng: random.Random, req: Request) -> None:
    n = rng.randint(1, req.n_events) if req.stream else rng.randint(0, req.n_tok)
    f.items.append(f"malformed_after={n}")
    if not req.stream:
        f.expect = FAIL  # half a JSON body: nothing honest can be made of it
    elif n < req.n_events:
        f.expect = EITHER  # a relay may drop the garbage event or end with an error


def _count_fault(rng: random.Random, req: Request) -> tuple[int, bool]:
    """An event count N for an ``X_after`` fault, and whether it triggers."""
    if req.stream:
        n = rng.randint(0, req.n_events - 1) if rng.random() < 0.85 else req.n_events
        return n, n < req.n_events
    n = rng.randint(0, req.n_tok) if rng.random() < 0.85 else req.n_tok + rng.randint(1, 2)
    return n, n <= req.n_tok


def _draw_terminal(f: Faults, kind: str, rng: random.Random, s: PlanSettings, req: Request) -> None:
    n, triggers = _count_fault(rng, req)
    f.items.append(f"{_TERMINAL[kind]}={n}")
    # N == the last event still acts, right after [DONE]: invisible to this request,
    # not to the requests that share the connection pool or the process.
    acts = n <= req.n_events if req.stream else n <= req.n_tok
    f.closes = acts and kind in ("close", "drop", "reset")
    f.kills = acts and kind == "crash"
    if triggers:
        f.expect = FAIL
        if kind == "stall":
            # Stream: the server's idle timeout ends it; non-stream: no headers ever.
            assert s.idle_timeout is not None and s.header_timeout is not None
            f.delay += s.idle_timeout if req.stream else s.header_timeout


def draw_modifiers(f: Faults, kind: str, rng: random.Random, s: PlanSettings, req: Request) -> None:
    """Benign modifiers on top of a fault, so faults are also seen on slow streams;
    then the delays as SPEC items and, rarely, ``p=0.5``."""
    if kind not in ("clean", "ttft", "token_delay") and rng.random() < 0.3:
        f.token_delay = rng.uniform(0.001, 0.008) * s.delay_scale
    if kind not in ("clean", "split_utf8", "crlf") and kind not in NET_KINDS:
        if req.stream and rng.random() < 0.1:
            f.items.append("split_utf8")
        if req.stream and rng.random() < 0.1:
            f.items.append("crlf")
    if f.ttft:
        f.items.insert(0, f"ttft={_ms(f.ttft)}")
    if f.token_delay:
        f.items.append(f"token_delay={_ms(f.token_delay)}")
        if f.jitter:
            f.items.append(f"jitter={_ms(f.jitter)}")
    if f.expect in (FAIL, EITHER) and f.items and rng.random() < 0.08:
        f.items.append("p=0.5")
        f.skippable = True


def _assemble(s: PlanSettings, index: int, kind: str, req: Request, f: Faults) -> RequestPlan:
    # Rounded to whole ms in the SPEC; count what the fake will really wait.
    ttft_ms = round(f.ttft * 1000) / 1000
    gap_ms = (round(f.token_delay * 1000) + round(f.jitter * 1000)) / 1000
    delay = f.delay + (ttft_ms + req.n_tok * gap_ms)
    managed = req.route in (MANAGED, STARTUP)
    deadline = delay + s.margin + (s.managed_margin if managed else 0.0)
    spec = ",".join(dict.fromkeys(f.items))
    return RequestPlan(
        index=index,
        kind=kind,
        route=req.route,
        alias=req.alias,
        endpoint=req.endpoint,
        body=req.body,
        spec="" if f.live else spec,
        toxic=f.toxic,
        disconnect_after=f.disconnect,
        expect=f.expect,
        skippable=f.skippable,
        tokens=req.tokens,
        finish_reason=req.finish_reason,
        alt_text=f.alt_text,
        n_events=req.n_events,
        delay=delay,
        deadline=deadline,
        closes_connection=f.closes,
        kills_process=f.kills,
        freezes_process=f.freeze_after is not None,
        live_spec=spec if f.live else "",
        freeze_after=f.freeze_after,
        vectors=f.vectors,
    )


def _ms(seconds: float) -> str:
    return f"{max(0, round(seconds * 1000))}ms"


def _duplicated_text(endpoint: str, tokens: Sequence[str], n: int) -> str | None:
    """The text when event ``n`` reaches the client twice (a relay that passes upstream
    events through as they are), or None when event ``n`` carries no text."""
    k = n - first_token_event(endpoint)
    if 0 <= k < len(tokens):
        return "".join(tokens[: k + 1]) + "".join(tokens[k:])
    return None
