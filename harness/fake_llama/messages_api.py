"""The Anthropic Messages API (``/v1/messages``) as llama-server serves it.

llama-server turns an Anthropic request into a chat request
(``server_chat_convert_anthropic_to_oai`` in tools/server/server-chat.cpp) and
generates it like one; ``anthropic_to_chat`` is that conversion, so the text is the
chat text of the converted messages. ``MessagesPayloads`` is the answer in
llama-server's shapes (server-task.cpp: ``to_json_anthropic``,
``to_json_anthropic_stream`` and the partial result's ``to_json_anthropic``). Errors
before the first byte are llama-server's OpenAI-shaped ones (it has no other); a
mid-stream error is ``event: error`` carrying the bare error object.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from harness.fake_llama.generate import Generation, RequestError
from harness.fake_llama.meter import TokenMeter
from harness.fake_llama.payloads import SseEvent

__all__ = ["MessagesPayloads", "anthropic_to_chat"]

# The fields llama-server copies from the Anthropic body to the chat one as they are.
_PASSED = ("temperature", "top_p", "top_k", "stream", "chat_template_kwargs")
_DEFAULT_MAX_TOKENS = 4096


def _text_of(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _system_text(system: Any) -> str | None:
    if system is None:
        return None
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "".join(
            _text_of(b.get("text"))
            for b in system
            if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def anthropic_to_chat(body: Any) -> dict[str, Any]:
    """The chat-completions body llama-server makes of an Anthropic body."""
    if not isinstance(body, dict):
        body = {}
    messages: list[Any] = []
    system = _system_text(body.get("system"))
    if system is not None:
        messages.append({"role": "system", "content": system})
    if "messages" not in body:
        # std::runtime_error, not invalid_argument: ex_wrapper answers 500.
        raise RequestError(500, "'messages' is required", "server_error")
    if isinstance(body["messages"], list):
        for msg in body["messages"]:
            messages.extend(_convert_message(msg))
    chat: dict[str, Any] = {"messages": messages}
    if "stop_sequences" in body:
        chat["stop"] = body["stop_sequences"]
    chat["max_tokens"] = body.get("max_tokens", _DEFAULT_MAX_TOKENS)
    chat.update({k: body[k] for k in _PASSED if k in body})
    return chat


def _convert_message(msg: Any) -> list[Any]:
    """One Anthropic message as chat messages (blocks -> parts, tool results -> tool turns)."""
    if not isinstance(msg, dict):
        return [msg]
    role = _text_of(msg.get("role"))
    if "content" not in msg:
        return [] if role == "assistant" else [msg]
    content = msg["content"]
    if not isinstance(content, list):
        return [msg]
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    reasoning = ""
    for block in content:
        block = block if isinstance(block, dict) else {}
        kind = block.get("type")
        if kind == "text":
            parts.append(block)
        elif kind == "thinking":
            reasoning += _text_of(block.get("thinking"))
        elif kind == "image":
            parts.extend(_image_part(block.get("source")))
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input", {}), separators=(",", ":"))
            function = {"name": _text_of(block.get("name")), "arguments": arguments}
            calls.append(
                {"id": _text_of(block.get("id")), "type": "function", "function": function}
            )
        elif kind == "tool_result":
            results.append(_tool_result(block))
    out: list[Any] = []
    if parts or calls or reasoning:
        new: dict[str, Any] = {"role": role, "content": parts or ""}
        if calls:
            new["tool_calls"] = calls
        if reasoning:
            new["reasoning_content"] = reasoning
        out.append(new)
    return out + results


def _image_part(source: Any) -> list[dict[str, Any]]:
    source = source if isinstance(source, dict) else {}
    if source.get("type") == "base64":
        media = source.get("media_type", "image/jpeg")
        url = f"data:{media};base64,{_text_of(source.get('data'))}"
    elif source.get("type") == "url":
        url = _text_of(source.get("url"))
    else:
        return []
    return [{"type": "image_url", "image_url": {"url": url}}]


def _tool_result(block: Mapping[str, Any]) -> dict[str, Any]:
    """A ``tool_result`` block as a tool turn: text only collapses to one string."""
    result = block.get("content")
    content: Any = result if isinstance(result, str) else ""
    if isinstance(result, list):
        parts: list[dict[str, Any]] = []
        has_images = False
        for c in result:
            c = c if isinstance(c, dict) else {}
            if c.get("type") == "text":
                parts.append({"type": "text", "text": _text_of(c.get("text"))})
            elif c.get("type") == "image":
                has_images = True
                parts.extend(_image_part(c.get("source")))
        content = parts if has_images else "".join(p["text"] for p in parts)
    return {"role": "tool", "tool_call_id": _text_of(block.get("tool_use_id")), "content": content}


class MessagesPayloads:
    """Every payload of one Anthropic answer (``StreamPayloads``)."""

    done_marker: str | None = None  # the stream ends with message_stop, no [DONE]
    legacy_done: str | None = None

    def __init__(self, gen: Generation, meter: TokenMeter, *, msg_id: str, alias: str) -> None:
        self.gen = gen
        self.meter = meter
        self.msg_id = msg_id  # llama-server's oaicompat_cmpl_id: a chatcmpl- id
        self.alias = alias

    def _text(self) -> str:
        return "".join(self.gen.tokens[: self.meter.n_sent])

    def _stop(self) -> tuple[str, str | None]:
        """``stop_reason`` and ``stop_sequence``: EOS or a stop word end the turn."""
        reason = "max_tokens" if self.gen.stop_type == "limit" else "end_turn"
        return reason, self.gen.stopping_word or None

    def token_events(self, index: int, token: str, slot: int) -> list[SseEvent]:
        """The first token opens the message and its text block."""
        events: list[SseEvent] = []
        if index == 0:
            usage = {"cache_read_input_tokens": 0, "input_tokens": self.gen.n_prompt}
            message: dict[str, Any] = {
                "id": self.msg_id,
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": self.alias,
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {**usage, "output_tokens": 0},
            }
            block = {"type": "text", "text": ""}
            events += [
                _event("message_start", message=message),
                _event("content_block_start", index=0, content_block=block),
            ]
        delta = {"type": "text_delta", "text": token}
        events.append(_event("content_block_delta", index=0, delta=delta))
        return events

    def final_events(self, slot: int) -> list[SseEvent]:
        """``content_block_stop`` (if text was sent), ``message_delta``, ``message_stop``."""
        reason, sequence = self._stop()
        events: list[SseEvent] = []
        if self._text():
            events.append(_event("content_block_stop", index=0))
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        events.append(
            _event("message_delta", delta=delta, usage={"output_tokens": self.meter.n_sent})
        )
        events.append(_event("message_stop"))
        return events

    def error_event(self, error: dict[str, Any]) -> SseEvent:
        """``event: error`` with the bare ``{"code", "message", "type"}`` object."""
        return "error", error

    def full_response(self, slot: int) -> dict[str, Any]:
        """``to_json_anthropic``: the message with one text block."""
        text = self._text()
        reason, sequence = self._stop()
        return {
            "id": self.msg_id,
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": text}] if text else [],
            "model": self.alias,
            "stop_reason": reason,
            "stop_sequence": sequence,
            "usage": {
                "cache_read_input_tokens": 0,
                "input_tokens": self.gen.n_prompt,
                "output_tokens": self.meter.n_sent,
            },
        }


def _event(kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
    return kind, {"type": kind, **fields}
