"""llama-server (OpenAI-compatible) replies as Ollama reply objects.

A whole chat completion becomes one ``/api/chat`` object, a text completion one
``/api/generate`` object, embeddings an ``/api/embed`` (or ``/api/embeddings``) object.
``StreamLines`` turns the chunks of a stream into Ollama's NDJSON objects one by one and
makes the last one, ``"done": true``, with the timings in nanoseconds that llama-server's
``timings`` (on its last chunk) and ``usage`` report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "Durations",
    "StreamLines",
    "chat_reply",
    "created_at",
    "embed_reply",
    "embeddings_reply",
    "generate_reply",
]

_NS = 1_000_000_000
# OpenAI finish reasons as Ollama's done_reason (a tool call is an ordinary stop there).
_DONE_REASONS = {"stop": "stop", "length": "length", "tool_calls": "stop"}


def created_at(seconds: float) -> str:
    """Ollama's ``created_at``: RFC 3339 in UTC."""
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Durations:
    """What server_core measured itself: the whole request and the wait for the model."""

    total: float
    """Seconds from the request's arrival to its last object."""
    load: float
    """Seconds until the upstream's answer began (a start or swap of the model included)."""


def _ms_ns(value: Any) -> int | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value * 1_000_000)
    return None


def _count(*values: Any) -> int:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


def timing_fields(reply: dict[str, Any], durations: Durations) -> dict[str, Any]:
    """Ollama's counts and durations (ns) from a reply's ``timings`` and ``usage``.

    ``load_duration`` is the time the request spent outside llama-server's evaluation
    (waiting for the model to start or be swapped in, queueing, transfer): the total minus
    the prompt and generation times when llama-server reports them. Without them it is
    the wait for the upstream's first answer, which for a whole (non-stream) answer
    includes the generation, so the timings win where there are any.
    """
    timings = reply.get("timings") if isinstance(reply.get("timings"), dict) else {}
    usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
    assert isinstance(timings, dict) and isinstance(usage, dict)
    prompt_ns = _ms_ns(timings.get("prompt_ms"))
    eval_ns = _ms_ns(timings.get("predicted_ms"))
    total_ns = int(durations.total * _NS)
    load_ns = int(durations.load * _NS)
    if prompt_ns is not None and eval_ns is not None:
        load_ns = max(0, total_ns - prompt_ns - eval_ns)
    return {
        "total_duration": total_ns,
        "load_duration": load_ns,
        # The whole prompt, as Ollama counts it: what llama-server evaluated this time
        # plus what its KV cache reused (``cache_n``), as its usage.prompt_tokens says.
        "prompt_eval_count": _count(usage.get("prompt_tokens"))
        or _count(timings.get("prompt_n")) + _count(timings.get("cache_n")),
        "prompt_eval_duration": prompt_ns or 0,
        "eval_count": _count(timings.get("predicted_n"), usage.get("completion_tokens")),
        "eval_duration": eval_ns or 0,
    }


def done_reason(finish_reason: Any) -> str:
    if isinstance(finish_reason, str):
        return _DONE_REASONS.get(finish_reason, finish_reason)
    return "stop"


def ollama_tool_calls(calls: Any) -> list[dict[str, Any]]:
    """OpenAI tool calls (arguments a JSON string) as Ollama's (arguments an object)."""
    out = []
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        raw = function.get("arguments") or "{}"
        try:
            arguments = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            arguments = {"arguments": raw}  # never drop what the model said
        if not isinstance(arguments, dict):
            arguments = {"arguments": arguments}
        out.append({"function": {"name": function["name"], "arguments": arguments}})
    return out


def _choice(reply: dict[str, Any]) -> dict[str, Any]:
    choices = reply.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else {}
    return first if isinstance(first, dict) else {}


def _assistant(delta: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": delta.get("content") or ""}
    if delta.get("reasoning_content"):
        message["thinking"] = delta["reasoning_content"]
    calls = ollama_tool_calls(delta.get("tool_calls"))
    if calls:
        message["tool_calls"] = calls
    return message


def chat_reply(reply: dict[str, Any], model: str, now: float, durations: Durations) -> dict:
    """A whole ``chat.completion`` as one ``/api/chat`` object."""
    choice = _choice(reply)
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    assert isinstance(message, dict)
    return {
        "model": model,
        "created_at": created_at(now),
        "message": _assistant(message),
        "done": True,
        "done_reason": done_reason(choice.get("finish_reason")),
        **timing_fields(reply, durations),
    }


def _generated(choice: dict[str, Any]) -> tuple[str, str | None]:
    """The text of a chat choice (message or delta) or a text completion choice."""
    if isinstance(choice.get("text"), str):
        return choice["text"], None
    message = choice.get("message", choice.get("delta"))
    if not isinstance(message, dict):
        return "", None
    return message.get("content") or "", message.get("reasoning_content") or None


def generate_reply(reply: dict[str, Any], model: str, now: float, durations: Durations) -> dict:
    """A whole chat or text completion as one ``/api/generate`` object."""
    choice = _choice(reply)
    text, thinking = _generated(choice)
    out: dict[str, Any] = {"model": model, "created_at": created_at(now), "response": text}
    if thinking:
        out["thinking"] = thinking
    out.update(done=True, done_reason=done_reason(choice.get("finish_reason")))
    out.update(timing_fields(reply, durations))
    return out


def _vectors(reply: dict[str, Any]) -> list[Any]:
    data = reply.get("data")
    items = [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []
    items.sort(key=lambda d: d.get("index", 0) if isinstance(d.get("index"), int) else 0)
    return [d.get("embedding") for d in items]


def embed_reply(reply: dict[str, Any], model: str, durations: Durations) -> dict[str, Any]:
    """``/embeddings`` as ``/api/embed``: ``embeddings``, one vector per input."""
    usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
    assert isinstance(usage, dict)
    return {
        "model": model,
        "embeddings": _vectors(reply),
        "total_duration": int(durations.total * _NS),
        "load_duration": int(durations.load * _NS),
        "prompt_eval_count": _count(usage.get("prompt_tokens")),
    }


def embeddings_reply(reply: dict[str, Any]) -> dict[str, Any]:
    """``/embeddings`` as the older ``/api/embeddings``: one ``embedding``."""
    vectors = _vectors(reply)
    return {"embedding": vectors[0] if vectors else []}


@dataclass
class _ToolCall:
    name: str = ""
    arguments: str = ""


@dataclass
class StreamLines:
    """The Ollama objects of one stream, chunk by chunk (``kind``: chat or generate)."""

    kind: str
    model: str
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    _calls: dict[int, _ToolCall] = field(default_factory=dict)

    def feed(self, chunk: dict[str, Any], now: float) -> list[dict[str, Any]]:
        """The objects one upstream chunk makes (none for a chunk without text)."""
        if isinstance(chunk.get("timings"), dict):
            self.timings = chunk["timings"]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choice = _choice(chunk)
        if isinstance(choice.get("finish_reason"), str):
            self.finish_reason = choice["finish_reason"]
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        assert isinstance(delta, dict)
        self._collect_calls(delta.get("tool_calls"))
        text, thinking = _generated(choice)
        if not text and not thinking:
            return []
        return [self._line(text, thinking, now)]

    def _collect_calls(self, deltas: Any) -> None:
        # OpenAI streams a tool call in pieces; Ollama sends it whole, once complete.
        for delta in deltas if isinstance(deltas, list) else []:
            if not isinstance(delta, dict):
                continue
            index = delta.get("index", len(self._calls))
            call = self._calls.setdefault(index if isinstance(index, int) else 0, _ToolCall())
            function = delta.get("function") if isinstance(delta.get("function"), dict) else {}
            assert isinstance(function, dict)
            call.name += function.get("name") or ""
            call.arguments += function.get("arguments") or ""

    def _line(self, text: str, thinking: str | None, now: float) -> dict[str, Any]:
        line: dict[str, Any] = {"model": self.model, "created_at": created_at(now)}
        if self.kind == "chat":
            line["message"] = _assistant({"content": text, "reasoning_content": thinking})
        else:
            line["response"] = text
            if thinking:
                line["thinking"] = thinking
        line["done"] = False
        return line

    def pending_calls(self, now: float) -> list[dict[str, Any]]:
        """The tool calls collected so far, as one chat object (none when there are none)."""
        if not self._calls or self.kind != "chat":
            return []
        calls = [
            {"function": {"name": c.name, "arguments": c.arguments}}
            for _, c in sorted(self._calls.items())
        ]
        self._calls = {}
        message = _assistant({"content": "", "tool_calls": calls})
        return [
            {"model": self.model, "created_at": created_at(now), "message": message, "done": False}
        ]

    def done_line(self, now: float, durations: Durations) -> dict[str, Any]:
        """The last object of a complete stream."""
        line: dict[str, Any] = {"model": self.model, "created_at": created_at(now)}
        if self.kind == "chat":
            line["message"] = {"role": "assistant", "content": ""}
        else:
            line["response"] = ""
        line.update(done=True, done_reason=done_reason(self.finish_reason))
        line.update(timing_fields({"timings": self.timings, "usage": self.usage}, durations))
        return line
