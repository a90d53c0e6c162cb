"""The JSON of a completion response in llama-server's shapes, chunk by chunk.

Three dialects: OpenAI chat (``chat.completion[.chunk]``), OpenAI text
(``text_completion``) and llama.cpp's native ``/completion``. The job decides
*when* each payload goes out; this module only decides what it contains.
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping
from typing import Any, Protocol

from harness.fake_llama._http import FINGERPRINT
from harness.fake_llama.generate import Generation, prompt_text
from harness.fake_llama.meter import TokenMeter

__all__ = ["CompletionPayloads", "SseEvent", "StreamPayloads", "completion_id", "random_id"]

_ID_ALPHABET = string.digits + string.ascii_lowercase + string.ascii_uppercase

SseEvent = tuple[str | None, dict[str, Any] | str]
"""One SSE event to write: its ``event:`` name (None: a bare ``data:``) and its data."""


def completion_id(rng: random.Random) -> str:
    """``chatcmpl-`` and 24 characters, like llama-server's ids."""
    return "chatcmpl-" + random_id(rng, 24)


def random_id(rng: random.Random, n: int = 32) -> str:
    """``n`` characters of llama-server's ``random_string()`` alphabet, from ``rng``."""
    return "".join(rng.choice(_ID_ALPHABET) for _ in range(n))


class StreamPayloads(Protocol):
    """What the stream and plain jobs need of one API's shapes (see ``stream.py``).

    ``CompletionPayloads`` is the OpenAI chat / text and native one;
    ``responses_api.ResponsesPayloads`` and ``messages_api.MessagesPayloads`` the others.
    """

    done_marker: str | None  # data after the last event (``[DONE]``), or None
    legacy_done: str | None  # data after the legacy ``error:`` line, or None

    def token_events(self, index: int, token: str, slot: int) -> list[SseEvent]:
        """The events that carry token number ``index`` (the first one opens the stream)."""

    def final_events(self, slot: int) -> list[SseEvent]:
        """The events after the last token (not ``done_marker``)."""

    def error_event(self, error: dict[str, Any]) -> SseEvent:
        """The mid-stream error event carrying llama-server's error object."""

    def full_response(self, slot: int) -> dict[str, Any]:
        """The non-stream body."""


class CompletionPayloads:
    """Every payload of one response; ``kind`` is ``chat``, ``cmpl`` or ``native``."""

    def __init__(
        self,
        kind: str,
        body: Mapping[str, Any],
        gen: Generation,
        meter: TokenMeter,
        *,
        cmpl_id: str,
        created: int,
        alias: str,
        settings: dict[str, Any],
    ) -> None:
        self.kind = kind
        self.body = body
        self.gen = gen
        self.meter = meter
        self.cmpl_id = cmpl_id
        self.created = created
        self.alias = alias
        self.settings = settings  # generation_settings of the native final event
        opts = body.get("stream_options")
        self.include_usage = (
            kind == "chat" and isinstance(opts, dict) and opts.get("include_usage") is True
        )
        self.done_marker: str | None = None if kind == "native" else "[DONE]"
        self.legacy_done: str | None = "[DONE]"  # the old dialect ended every stream so

    def token_events(self, index: int, token: str, slot: int) -> list[SseEvent]:
        """A chat stream opens with the role chunk; every token is one chunk."""
        events: list[SseEvent] = []
        if index == 0 and self.kind == "chat":
            events.append((None, self.chat_delta({"role": "assistant", "content": None})))
        events.append((None, self.token_event(token, slot)))
        return events

    def final_events(self, slot: int) -> list[SseEvent]:
        """The finish chunk (and usage chunk) or the native ``stop: true`` object."""
        return [(None, payload) for payload in self.final_payloads(slot)]

    def error_event(self, error: dict[str, Any]) -> SseEvent:
        """``data: {"error": {...}}`` (llama-server's ``format_oai_sse``)."""
        return None, {"error": error}

    def _chunk_base(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "id": self.cmpl_id,
            "model": self.alias,
            "system_fingerprint": FINGERPRINT,
            "object": "chat.completion.chunk",
        }

    def chat_delta(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        """A ``chat.completion.chunk`` carrying ``delta``."""
        return {
            "choices": [{"finish_reason": finish, "index": 0, "delta": delta}],
            **self._chunk_base(),
        }

    def cmpl_chunk(self, text: str, finish: str | None = None) -> dict[str, Any]:
        """A ``text_completion`` chunk (also the non-stream body, with the whole text)."""
        return {
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            "created": self.created,
            "model": self.alias,
            "system_fingerprint": FINGERPRINT,
            "object": "text_completion",
            "id": self.cmpl_id,
        }

    def native_partial(self, token: str, slot: int) -> dict[str, Any]:
        """One token of a native ``/completion`` stream."""
        return {
            "index": 0,
            "content": token,
            "tokens": [],
            "stop": False,
            "id_slot": slot,
            "tokens_predicted": self.meter.n_sent,
            "tokens_evaluated": self.gen.n_prompt,
        }

    def native_final(self, content: str, slot: int) -> dict[str, Any]:
        """The native ``stop: true`` object (the last event, or the non-stream body)."""
        return {
            "index": 0,
            "content": content,
            "tokens": [],
            "id_slot": slot,
            "stop": True,
            "model": self.alias,
            "tokens_predicted": self.meter.n_sent,
            "tokens_evaluated": self.gen.n_prompt,
            "generation_settings": self.settings,
            "prompt": prompt_text(self.body),
            "has_new_line": False,
            "truncated": False,
            "stop_type": self.gen.stop_type,
            "stopping_word": self.gen.stopping_word,
            "tokens_cached": self.gen.n_prompt + self.meter.n_sent,
            "timings": self.meter.timings(),
        }

    def token_event(self, token: str, slot: int) -> dict[str, Any]:
        """The stream event that carries one token."""
        if self.kind == "chat":
            return self.chat_delta({"content": token})
        if self.kind == "cmpl":
            return self.cmpl_chunk(token)
        return self.native_partial(token, slot)

    def final_payloads(self, slot: int) -> list[dict[str, Any]]:
        """The events after the last token (not counting [DONE])."""
        finish = self.gen.finish_reason
        if self.kind == "chat":
            out = [self.chat_delta({}, finish)]
            if self.include_usage:
                out.append({"choices": [], **self._chunk_base(), "usage": self.meter.usage()})
            out[-1]["timings"] = self.meter.timings()
            return out
        if self.kind == "cmpl":
            return [self._with_usage(self.cmpl_chunk("", finish))]
        return [self.native_final("", slot)]

    def full_response(self, slot: int) -> dict[str, Any]:
        """The non-stream body, with the text of the tokens sent."""
        text = "".join(self.gen.tokens[: self.meter.n_sent])
        finish = self.gen.finish_reason
        if self.kind == "chat":
            message = {"role": "assistant", "content": text}
            return {
                "choices": [{"finish_reason": finish, "index": 0, "message": message}],
                "created": self.created,
                "model": self.alias,
                "system_fingerprint": FINGERPRINT,
                "object": "chat.completion",
                "usage": self.meter.usage(),
                "id": self.cmpl_id,
                "timings": self.meter.timings(),
            }
        if self.kind == "cmpl":
            return self._with_usage(self.cmpl_chunk(text, finish))
        return self.native_final(text, slot)

    def _with_usage(self, chunk: dict[str, Any]) -> dict[str, Any]:
        chunk["usage"] = self.meter.usage()
        chunk["timings"] = self.meter.timings()
        return chunk
