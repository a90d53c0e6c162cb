"""Reading one chunk (or one whole JSON body): text, reasoning, finish reason, model, id, usage.

The dialects share the fields: OpenAI chat (``choices[0].delta`` when streaming,
``choices[0].message`` otherwise), OpenAI completions (``choices[0].text``),
llama-server's native ``/completion`` (``content``, ``stop``, ``stop_type``), OpenAI
Responses (``response.output_text.delta`` events' ``delta``; the ``response`` object of
``response.created``/``response.completed`` for model, id and usage; a whole body's
``output`` items) and Anthropic Messages (``content_block_delta`` events with a
``text_delta``; ``message_start``'s ``message``, ``message_delta``'s ``stop_reason``; a
whole body's ``content`` blocks) and Ollama (``message.content`` of ``/api/chat``,
``response`` of ``/api/generate``, ``done_reason`` and the timing fields of the done
line or the whole body). The pieces are kept in lists and joined once at the
end: per-chunk work stays constant.
"""

from __future__ import annotations

from typing import Any

from harness.client._result import StreamResult

__all__ = ["OLLAMA_TIMINGS", "Transcript"]

# Ollama's counts and durations (nanoseconds) on the done line, kept in ``timings``.
OLLAMA_TIMINGS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)

# llama-server's stop_type, in OpenAI's finish_reason words.
_STOP_TYPES = {"eos": "stop", "word": "stop", "limit": "length"}
# Anthropic's stop_reason, in the same words.
_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}
# Responses events whose ``response`` object names the model, the id and the usage.
_RESPONSE_HOLDERS = frozenset(
    {
        "response.created",
        "response.in_progress",
        "response.completed",
        "response.failed",
        "response.incomplete",
    }
)


class Transcript:
    """The text and reasoning of one response, collected chunk by chunk into ``result``."""

    def __init__(self, result: StreamResult) -> None:
        self.result = result
        self.pieces: list[str] = []
        self.thoughts: list[str] = []

    def absorb(self, obj: dict[str, Any], t: float, *, stream: bool) -> None:
        """Pick text, finish reason, model, id and usage out of one chunk or body."""
        kind = "response" if obj.get("object") == "response" else obj.get("type")
        if isinstance(kind, str) and "choices" not in obj:
            piece, thought = self._from_typed(kind, obj, stream)
        elif "done" in obj and "choices" not in obj:  # an Ollama line or body
            piece, thought = self._from_ollama(obj)
        else:
            self._identity(obj)
            choices = obj.get("choices")
            if isinstance(choices, list):
                piece, thought = self._from_choices(choices, stream)
            elif "content" in obj:  # llama-server native /completion
                piece, thought = self._from_native(obj), None
            else:
                return
        self._add(self.thoughts, thought, t)
        self._add(self.pieces, piece, t)

    def _identity(self, obj: dict[str, Any]) -> None:
        """The id, the model and the usage an object carries."""
        r = self.result
        cid = obj.get("id")
        if isinstance(cid, str):
            r.ids.add(cid)
        if r.model is None and isinstance(obj.get("model"), str):
            r.model = obj["model"]
        usage = obj.get("usage")
        if isinstance(usage, dict):
            r.usage = usage

    def _from_typed(self, kind: str, obj: dict[str, Any], stream: bool) -> tuple[Any, Any]:
        """An event (or body) of the Responses or the Messages API, told by its ``type``."""
        if kind == "response.output_text.delta":
            return obj.get("delta"), None
        if kind == "response.reasoning_text.delta":
            return None, obj.get("delta")
        if kind == "content_block_delta":
            delta = obj.get("delta")
            if not isinstance(delta, dict):
                return None, None
            if delta.get("type") == "thinking_delta":
                return None, delta.get("thinking")
            return (delta.get("text"), None) if delta.get("type") == "text_delta" else (None, None)
        if kind in _RESPONSE_HOLDERS or kind == "message_start":
            holder = obj.get("response" if kind in _RESPONSE_HOLDERS else "message")
            if isinstance(holder, dict):
                self._identity(holder)
        elif kind == "message_delta":
            self._stop_reason(obj.get("delta"))
            if isinstance(obj.get("usage"), dict):
                self.result.usage = obj["usage"]
        elif not stream and kind == "message":  # a whole Anthropic body
            self._identity(obj)
            self._stop_reason(obj)
            return _texts(obj.get("content"), "text"), _texts(obj.get("content"), "thinking")
        elif not stream and kind == "response":  # its ``object``: a whole Responses body
            return self._from_response_body(obj)
        return None, None

    def _from_response_body(self, obj: dict[str, Any]) -> tuple[Any, Any]:
        """A whole Responses body: the text of its ``message`` items' ``output_text``."""
        self._identity(obj)
        output = obj.get("output")
        items = output if isinstance(output, list) else []
        texts = [
            _texts(item.get("content"), "output_text", key="text")
            for item in items
            if isinstance(item, dict) and item.get("type") == "message"
        ]
        return "".join(t for t in texts if t) or None, None

    def _from_ollama(self, obj: dict[str, Any]) -> tuple[Any, Any]:
        """An Ollama object: chat's ``message`` or generate's ``response``; the done
        line's (or whole body's) ``done_reason`` and counts and durations."""
        r = self.result
        if r.model is None and isinstance(obj.get("model"), str):
            r.model = obj["model"]
        if isinstance(obj.get("done_reason"), str):
            r.finish_reason = obj["done_reason"]
        for key in OLLAMA_TIMINGS:
            if key in obj:
                r.timings[key] = obj[key]
        message = obj.get("message")
        if isinstance(message, dict):
            return message.get("content"), message.get("thinking")
        return obj.get("response"), obj.get("thinking")

    def _stop_reason(self, holder: Any) -> None:
        if isinstance(holder, dict) and isinstance(holder.get("stop_reason"), str):
            reason = holder["stop_reason"]
            self.result.finish_reason = _STOP_REASONS.get(reason, reason)

    def write(self) -> None:
        """Join the collected pieces into ``result.text`` and ``result.reasoning``."""
        self.result.text = "".join(self.pieces)
        self.result.reasoning = "".join(self.thoughts)

    def _from_choices(self, choices: list[Any], stream: bool) -> tuple[Any, Any]:
        if not choices or not isinstance(choices[0], dict):
            return None, None
        c0 = choices[0]
        holder = c0.get("delta" if stream else "message")
        if isinstance(holder, dict):
            piece, thought = holder.get("content"), holder.get("reasoning_content")
        else:
            piece, thought = c0.get("text"), None
        reason = c0.get("finish_reason")
        if isinstance(reason, str):
            self.result.finish_reason = reason
        return piece, thought

    def _from_native(self, obj: dict[str, Any]) -> Any:
        if obj.get("stop") is True:
            stop_type = obj.get("stop_type")
            if isinstance(stop_type, str):
                self.result.finish_reason = _STOP_TYPES.get(stop_type, stop_type)
        return obj.get("content")

    def _add(self, into: list[str], value: Any, t: float) -> None:
        # Only non-empty text counts: role-only and empty deltas do not start the answer.
        if isinstance(value, str) and value:
            into.append(value)
            if self.result.t_first_token is None:
                self.result.t_first_token = t


def _texts(blocks: Any, kind: str, *, key: str | None = None) -> str | None:
    """The joined ``key`` (default: ``kind``) of the content blocks of type ``kind``."""
    if not isinstance(blocks, list):
        return None
    field = key or kind
    parts = [
        b[field]
        for b in blocks
        if isinstance(b, dict) and b.get("type") == kind and isinstance(b.get(field), str)
    ]
    return "".join(parts) or None
