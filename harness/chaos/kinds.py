"""The chaos runner's vocabulary: fault kinds, routes, endpoints, dialects, expectations.

Pure data. ``KINDS`` is the whole mix (a row of the report each); a run enables the
kinds it can exercise (``PlanSettings.enabled_kinds`` in ``harness.chaos.plan``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CHAT",
    "COMPLETIONS",
    "DIALECT_ENDPOINTS",
    "DIALECT_NAMES",
    "DIRECT",
    "EITHER",
    "EMBED",
    "EMBEDDINGS",
    "FAIL",
    "FIRST_KINDS",
    "KINDS",
    "LANE",
    "LIVE",
    "MANAGED",
    "MESSAGES",
    "NATIVE",
    "NET_KINDS",
    "NEW_KINDS",
    "OLLAMA_CHAT",
    "OLLAMA_DIALECTS",
    "OLLAMA_ENDPOINTS",
    "OLLAMA_GENERATE",
    "RESPONSES",
    "STARTUP",
    "SUCCEED",
    "KindInfo",
    "dialect_of",
]

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"
NATIVE = "/completion"
OLLAMA_CHAT = "/api/chat"
OLLAMA_GENERATE = "/api/generate"

# The request dialects a run draws from (``--dialects``), each with its endpoint. The
# stream each answers is read by ``server_core.sse.dialects`` (chat and completions
# share the chat stream dialect; the run tells them apart, their bodies differ); the
# Ollama routes' NDJSON streams by ``harness.client``'s ``ollama`` dialect.
DIALECT_ENDPOINTS: dict[str, str] = {
    "chat": CHAT,
    "completions": COMPLETIONS,
    "responses": RESPONSES,
    "messages": MESSAGES,
    "native": NATIVE,
    "ollama_chat": OLLAMA_CHAT,
    "ollama_generate": OLLAMA_GENERATE,
}
DIALECT_NAMES = tuple(DIALECT_ENDPOINTS)
# Ollama's API: served by server_core (it translates), not by llama-server or the fake.
OLLAMA_DIALECTS = ("ollama_chat", "ollama_generate")
OLLAMA_ENDPOINTS = frozenset({OLLAMA_CHAT, OLLAMA_GENERATE})
_DIALECT_OF = {path: name for name, path in DIALECT_ENDPOINTS.items()}


def dialect_of(endpoint: str) -> str:
    """The request dialect of ``endpoint`` (``embeddings`` for /v1/embeddings)."""
    return _DIALECT_OF.get(endpoint, endpoint.rsplit("/", 1)[-1])


# Routes: an external alias straight to a fake, the managed alias (server_core's own
# child), or a netfault lane (an external alias whose upstream is a FaultProxy).
DIRECT = "direct"
MANAGED = "managed"
LANE = "lane"
# The routes of the later kinds, each to a fake of its own (spawn mode): a fake whose
# live fault set is changed with POST /_fault (one request at a time), a fake started
# with --embeddings, and managed aliases whose children fail to start or start slowly.
LIVE = "live"
EMBED = "embed"
STARTUP = "startup"

# What the fault must do to the response.
SUCCEED = "succeed"  # done with the whole text (or disconnected, when the client leaves)
FAIL = "fail"  # an honest error: http_error or error_event; done is a violation
EITHER = "either"  # done with the whole text, or an honest error


@dataclass(frozen=True)
class KindInfo:
    """A fault kind of the mix: its weight and what the run must offer for it."""

    weight: float
    # "" | "idle_timeout" | "header_timeout" | "managed" | "lanes" | "live" | "embeddings"
    # | "startup" | "freeze"
    needs: str = ""
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
    # Added later, at the end so the table order of the kinds above stays; a run that
    # leaves these out (--kinds / --exclude-kinds) draws exactly what it drew before.
    "ping": KindInfo(
        2, needs="idle_timeout", doc="`:` pings only: before the first event, or after a stall"
    ),
    "live_fault": KindInfo(
        2, needs="live", doc="the fault set live with POST /_fault (no X-Fault), then cleared"
    ),
    "embeddings": KindInfo(2, needs="embeddings", doc="/v1/embeddings: clean, status or hang"),
    "startup": KindInfo(
        1, needs="startup", doc="a managed child that fails to start or loads slowly"
    ),
    "freeze": KindInfo(1, needs="freeze", doc="SIGSTOP of the managed child mid-stream"),
}
# The kinds added after the first mix (see above), and the first mix: ``--kinds`` with
# the first mix draws, seed for seed, what runs drew before the later kinds existed.
NEW_KINDS = ("ping", "live_fault", "embeddings", "startup", "freeze")
FIRST_KINDS = tuple(k for k in KINDS if k not in NEW_KINDS)
NET_KINDS = frozenset(k for k in KINDS if k.startswith("net_"))
