"""The JSON of a completion response in llama-server's shapes, chunk by chunk.

Three dialects: OpenAI chat (``chat.completion[.chunk]``), OpenAI text
(``text_completion``) and llama.cpp's native ``/completion``. The job decides
*when* each payload goes out; this module only decides what it contains.
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping
from typing import Any

from harness.fake_llama._http import FINGERPRINT
from harness.fake_llama.generate import Generation, prompt_text
from harness.fake_llama.meter import TokenMeter

__all__ = ["CompletionPayloads", "completion_id"]

_ID_ALPHABET = string.digits + string.ascii_lowercase + string.ascii_uppercase


def completion_id(rng: random.Random) -> str:
    """``chatcmpl-`` and 24 characters, like llama-server's ids."""
    return "chatcmpl-" + "".join(rng.choice(_ID_ALPHABET) for _ in range(24))


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
