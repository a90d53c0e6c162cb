"""The four stream dialects the fake serves, as test cases: route, body, text, event count.

Every case asks for the same conversation (the native one for a prompt) with
``max_tokens=4``: the fake's natural length is at least 4 tokens, so each stream
carries exactly 4 tokens and a fixed number of events.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.fake_llama import expected_text
from harness.fake_llama.rawhttp import RawResponse
from server_core.sse.codec import Event
from server_core.sse.dialects import CHAT, MESSAGES, NATIVE, RESPONSES, Frame, StreamDialect

SYSTEM = "be brief"
USER = "count for me"
N_TOKENS = 4
MESSAGES_IN = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
CHAT_BODY = {"messages": MESSAGES_IN, "max_tokens": N_TOKENS}


def _chat_text(obj: dict[str, Any]) -> str:
    return "".join(c.get("delta", {}).get("content") or "" for c in obj.get("choices", []))


def _resp_text(obj: dict[str, Any]) -> str:
    return obj["delta"] if obj.get("type") == "response.output_text.delta" else ""


def _messages_text(obj: dict[str, Any]) -> str:
    delta = obj.get("delta") if obj.get("type") == "content_block_delta" else None
    return delta["text"] if isinstance(delta, dict) else ""


def _native_text(obj: dict[str, Any]) -> str:
    return "" if obj.get("stop") else str(obj.get("content", ""))


def _chat_plain(obj: dict[str, Any]) -> str:
    return str(obj["choices"][0]["message"]["content"])


def _resp_plain(obj: dict[str, Any]) -> str:
    return "".join(part["text"] for item in obj["output"] for part in item["content"])


def _messages_plain(obj: dict[str, Any]) -> str:
    return "".join(block["text"] for block in obj["content"])


def _native_plain(obj: dict[str, Any]) -> str:
    return str(obj["content"])


@dataclass(frozen=True)
class Case:
    """One dialect: where to send, what to send, how to read the text back."""

    name: str
    path: str
    body: dict[str, Any]
    dialect: StreamDialect
    text_of: Callable[[dict[str, Any]], str]
    events: int  # events of the complete 4-token stream
    expected: str  # its text
    plain_of: Callable[[dict[str, Any]], str]  # the text of the non-stream body

    def stream_body(self, **extra: Any) -> dict[str, Any]:
        return {**self.body, "stream": True, **extra}

    def text(self, res: RawResponse) -> str:
        """The generated text carried by the stream's JSON events."""
        out = []
        for event in res.events:
            if event.data is None:
                continue
            try:
                obj = json.loads(event.data)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(self.text_of(obj))
        return "".join(out)

    def frames(self, res: RawResponse) -> list[Frame]:
        """What ``server_core``'s dialect makes of each event, in order."""
        return [self.dialect.read(event)[0] for event in res.events]


_CHAT_TEXT = "".join(expected_text(CHAT_BODY)[0])
_NATIVE_BODY = {"prompt": f"{SYSTEM} {USER}", "n_predict": N_TOKENS}

CASES = [
    Case(
        "chat",
        "/v1/chat/completions",
        CHAT_BODY,
        CHAT,
        _chat_text,
        1 + 4 + 1 + 1,
        _CHAT_TEXT,
        _chat_plain,
    ),
    Case(
        "responses",
        "/v1/responses",
        {"instructions": SYSTEM, "input": USER, "max_output_tokens": N_TOKENS},
        RESPONSES,
        _resp_text,
        # created, in_progress, item added, part added, 4 deltas, 3 done events, completed
        4 + 4 + 3 + 1,
        _CHAT_TEXT,
        _resp_plain,
    ),
    Case(
        "messages",
        "/v1/messages",
        {"system": SYSTEM, "messages": [{"role": "user", "content": USER}], "max_tokens": 4},
        MESSAGES,
        _messages_text,
        # message_start, block start, 4 deltas, block stop, message_delta, message_stop
        2 + 4 + 3,
        _CHAT_TEXT,
        _messages_plain,
    ),
    Case(
        "native",
        "/completion",
        _NATIVE_BODY,
        NATIVE,
        _native_text,
        4 + 1,
        "".join(expected_text(_NATIVE_BODY)[0]),
        _native_plain,
    ),
]
BY_NAME = {case.name: case for case in CASES}


def event_json(event: Event) -> Any:
    """An event's data as JSON."""
    return json.loads(event.data or "")
