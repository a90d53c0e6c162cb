"""The draws of the kinds added to the mix later: ping-only upstreams, live
``/_fault`` changes, embeddings, managed children that fail to start, frozen children.

Pure code, called by ``harness.chaos.draw`` only for these kinds, so a run that leaves
them out draws exactly what it drew before they existed. What each must end with:

* ``ping``: ``:`` comment pings are a sign of life only before the first event (a long
  prompt). ``ttft`` longer than the server's idle timeout with pings meanwhile must
  succeed; pings after ``stall_after=N`` (N >= 1) must not keep the stream open: it ends
  with an error at the idle timeout.
* ``live_fault``: an ordinary fault (``LIVE_SUBKINDS``) set with ``POST /_fault`` on a
  fake of its own and sent without ``X-Fault``; the same rules as with the header.
* ``embeddings``: ``/v1/embeddings`` on a ``--embeddings`` fake: the fake's deterministic
  vectors, or an HTTP error for ``status=N`` / ``hang``.
* ``startup``: a managed alias whose child starts with a process fault (see
  ``STARTUP_FAULTS``): an HTTP error for a child that cannot start, the whole text for
  one that only loads slowly.
* ``freeze``: the runner SIGSTOPs the managed child after event ``freeze_after`` of a
  stream whose tokens come 200-400 ms apart, so a token is always still owed: the
  stream must end with an error (the server's liveness probe or idle timeout), never
  with ``[DONE]``.
"""

from __future__ import annotations

import random
from typing import Any

from harness.chaos.drawn import Faults, Request
from harness.chaos.kinds import DIRECT, EMBED, EMBEDDINGS, FAIL, LIVE, MANAGED, STARTUP
from harness.chaos.plan import PlanSettings
from harness.fake_llama import embedding_vector, parse_faults

__all__ = [
    "LIVE_SUBKINDS",
    "STARTUP_FAULTS",
    "draw_embeddings_request",
    "draw_new_fault",
    "draw_new_route",
]

# The faults a live_fault request sets with POST /_fault (kinds of the first mix).
LIVE_SUBKINDS = ("ttft", "token_delay", "error", "close", "reset", "status")
# The managed aliases of the startup kind (suffix -> the child's --fault SPEC).
STARTUP_FAULTS: tuple[tuple[str, str], ...] = (
    ("crash", "crash_on_load"),
    ("late-crash", "crash_on_load=300ms"),
    ("bind", "bind_fail"),
    ("slow", "load_delay=500ms"),
)
_EMBED_STATUSES = (400, 429, 500, 503)
_WORDS = ("river", "lantern", "café", "granite", "日本", "🚀")


def draw_new_route(s: PlanSettings, rng: random.Random, kind: str) -> tuple[str, str | None]:
    """Where a request of a later kind goes."""
    if kind == "live_fault":
        return LIVE, s.live_alias
    if kind == "embeddings":
        return EMBED, s.embed_alias
    if kind == "startup":
        return STARTUP, rng.choice(s.startup_aliases)[0]
    if kind == "freeze":
        return MANAGED, s.managed_alias
    return DIRECT, rng.choice(s.aliases)


def draw_embeddings_request(s: PlanSettings, rng: random.Random, seed: int, index: int) -> Request:
    """An embeddings request: one string or a list of one to three."""
    texts = [
        f"chaos {seed} embedding {index}.{j}: {rng.choice(_WORDS)}"
        for j in range(rng.randint(1, 3))
    ]
    body: dict[str, Any] = {
        "model": s.embed_alias or "",
        "input": texts[0] if len(texts) == 1 else texts,
        "stream": False,
    }
    return Request(EMBED, s.embed_alias, EMBEDDINGS, body, (), "", 0)


def draw_new_fault(f: Faults, kind: str, rng: random.Random, s: PlanSettings, req: Request) -> None:
    """The fault of a later kind (not ``live_fault``: ``draw`` reuses the first mix's)."""
    if kind == "ping":
        _draw_ping(f, rng, s, req)
    elif kind == "embeddings":
        _draw_embeddings(f, rng, s, req)
    elif kind == "startup":
        spec = dict(s.startup_aliases)[req.alias or ""]
        load_delay = parse_faults(spec).load_delay
        if not load_delay:
            f.expect = FAIL  # the child never serves: an HTTP error, no body
        f.delay += load_delay
    elif kind == "freeze":
        assert s.idle_timeout is not None
        f.token_delay = rng.uniform(0.2, 0.4)
        f.items.append(f"token_delay={_ms(f.token_delay)}")
        f.freeze_after = rng.randint(1, max(1, req.n_tok))
        f.expect = FAIL
        f.delay += s.idle_timeout


def _draw_ping(f: Faults, rng: random.Random, s: PlanSettings, req: Request) -> None:
    assert s.idle_timeout is not None
    ping = min(0.2, s.idle_timeout / 4)
    if rng.random() < 0.5:
        # Pings while the prompt is processed: longer than the idle timeout, honest.
        f.ttft = rng.uniform(1.3, 2.0) * s.idle_timeout
        f.items += [f"ttft={_ms(f.ttft)}", f"ping={_ms(ping)}"]
        return
    n = rng.randint(1, req.n_events - 1)
    f.items += [f"stall_after={n}", f"ping={_ms(ping)}"]
    f.expect = FAIL
    f.delay += s.idle_timeout


def _draw_embeddings(f: Faults, rng: random.Random, s: PlanSettings, req: Request) -> None:
    texts = req.body["input"]
    texts = [texts] if isinstance(texts, str) else texts
    f.vectors = tuple(tuple(embedding_vector(t, s.fake_seed)) for t in texts)
    draw = rng.random()
    if draw < 0.25:
        f.items.append(f"status={rng.choice(_EMBED_STATUSES)}")
        f.expect = FAIL
    elif draw < 0.4 and s.header_timeout is not None:
        f.items.append("hang")
        f.expect = FAIL
        f.delay += s.header_timeout


def _ms(seconds: float) -> str:
    return f"{max(0, round(seconds * 1000))}ms"
