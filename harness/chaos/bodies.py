"""The body of a request in each request dialect, and which dialect a request speaks.

Pure code. ``draw_endpoint`` maps the uniform number a request draws for its endpoint to
one of the run's dialects (the first mix's 85/15 chat/completions split when those two
are all the run offers, so old seeds draw what they drew); ``build_body`` writes the
same request (prompt, token limit, stream) the way each API spells it; and
``generation_body`` is the chat body the fake generates the text of (llama-server turns
Responses and Anthropic requests into chat requests before it generates; the fake's own
``responses_to_chat`` / ``anthropic_to_chat`` do the same here; an Ollama request
becomes the chat request server_core translates it to).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.chaos.kinds import (
    CHAT,
    COMPLETIONS,
    DIALECT_ENDPOINTS,
    DIALECT_NAMES,
    MESSAGES,
    NATIVE,
    OLLAMA_CHAT,
    OLLAMA_ENDPOINTS,
    RESPONSES,
)
from harness.fake_llama import anthropic_to_chat, responses_to_chat

__all__ = [
    "MESSAGES_DEFAULT_MAX_TOKENS",
    "build_body",
    "draw_endpoint",
    "generation_body",
    "normalise_dialects",
    "ollama_to_chat",
]

# Anthropic requires max_tokens: a request that draws no limit sends this one.
MESSAGES_DEFAULT_MAX_TOKENS = 64
_FIRST_MIX = ("chat", "completions")


def normalise_dialects(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` without repeats, in ``DIALECT_NAMES`` order (so a seed's draws do not
    depend on how the command line listed them); ValueError for an unknown one."""
    unknown = [n for n in names if n not in DIALECT_ENDPOINTS]
    if unknown:
        raise ValueError(f"unknown dialect(s) {', '.join(unknown)}; known: {DIALECT_NAMES}")
    if not names:
        raise ValueError("no dialect to draw from")
    return tuple(n for n in DIALECT_NAMES if n in names)


def draw_endpoint(dialects: Sequence[str], u: float, kind: str) -> str:
    """The endpoint for the uniform draw ``u`` in [0, 1).

    A ``freeze`` request is always chat (its child must still owe a token after the role
    chunk). With only chat and completions on offer, the first mix's split (85 % chat);
    otherwise every dialect of the run is equally likely.
    """
    if kind == "freeze":
        return CHAT
    if tuple(dialects) == _FIRST_MIX:
        return CHAT if u < 0.85 else COMPLETIONS
    name = dialects[min(int(u * len(dialects)), len(dialects) - 1)]
    return DIALECT_ENDPOINTS[name]


def build_body(
    endpoint: str,
    alias: str,
    prompt: str,
    max_tokens: int | None,
    stream: bool,
    include_usage: bool = False,
) -> dict[str, Any]:
    """The request body for ``endpoint``: chat ``messages``/``max_tokens``, completions
    ``prompt``/``max_tokens``, Responses ``input``/``max_output_tokens``, Anthropic
    ``messages``/``max_tokens`` (always), native ``prompt``/``n_predict``, Ollama chat
    ``messages`` and generate ``prompt`` with ``options.num_predict``."""
    if endpoint in OLLAMA_ENDPOINTS:
        return _ollama_body(endpoint, alias, prompt, max_tokens, stream)
    body: dict[str, Any] = {"model": alias}
    if endpoint in (CHAT, MESSAGES):
        body["messages"] = [{"role": "user", "content": prompt}]
    elif endpoint == RESPONSES:
        body["input"] = prompt
    else:
        body["prompt"] = prompt
    body["stream"] = stream
    if endpoint == MESSAGES and max_tokens is None:
        max_tokens = MESSAGES_DEFAULT_MAX_TOKENS
    if max_tokens is not None:
        limit = {RESPONSES: "max_output_tokens", NATIVE: "n_predict"}.get(endpoint, "max_tokens")
        body[limit] = max_tokens
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return body


def _ollama_body(
    endpoint: str, alias: str, prompt: str, max_tokens: int | None, stream: bool
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": alias}
    if endpoint == OLLAMA_CHAT:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    body["stream"] = stream
    if max_tokens is not None:
        body["options"] = {"num_predict": max_tokens}
    return body


def ollama_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The chat request server_core makes of an Ollama chat or generate body (a generate
    ``prompt`` is one user turn; ``num_predict`` is ``max_tokens``), as far as the fake's
    text depends on it."""
    messages = body.get("messages")
    if messages is None:
        messages = [{"role": "user", "content": body.get("prompt", "")}]
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    options = body.get("options") or {}
    if "num_predict" in options:
        out["max_tokens"] = options["num_predict"]
    out["stream"] = bool(body.get("stream", True))
    return out


def generation_body(endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    """The body whose text the fake generates: a Responses or an Anthropic request as the
    chat request llama-server converts it to (``input`` -> one user message,
    ``max_output_tokens`` -> ``max_tokens``), an Ollama one as the chat request
    server_core makes of it; every other body as it is."""
    if endpoint in OLLAMA_ENDPOINTS:
        return ollama_to_chat(body)
    if endpoint == RESPONSES:
        return responses_to_chat(body)
    if endpoint == MESSAGES:
        return anthropic_to_chat(body)
    return body
