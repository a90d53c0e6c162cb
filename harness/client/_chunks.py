"""Reading one chunk (or one whole JSON body): text, reasoning, finish reason, model, id, usage.

Three dialects share the fields: OpenAI chat (``choices[0].delta`` when streaming,
``choices[0].message`` otherwise), OpenAI completions (``choices[0].text``) and
llama-server's native ``/completion`` (``content``, ``stop``, ``stop_type``). The
pieces are kept in lists and joined once at the end: per-chunk work stays constant.
"""

from __future__ import annotations

from typing import Any

from harness.client._result import StreamResult

__all__ = ["Transcript"]

# llama-server's stop_type, in OpenAI's finish_reason words.
_STOP_TYPES = {"eos": "stop", "word": "stop", "limit": "length"}


class Transcript:
    """The text and reasoning of one response, collected chunk by chunk into ``result``."""

    def __init__(self, result: StreamResult) -> None:
        self.result = result
        self.pieces: list[str] = []
        self.thoughts: list[str] = []

    def absorb(self, obj: dict[str, Any], t: float, *, stream: bool) -> None:
        """Pick text, finish reason, model, id and usage out of one chunk or body."""
        r = self.result
        cid = obj.get("id")
        if isinstance(cid, str):
            r.ids.add(cid)
        if r.model is None and isinstance(obj.get("model"), str):
            r.model = obj["model"]
        usage = obj.get("usage")
        if isinstance(usage, dict):
            r.usage = usage
        choices = obj.get("choices")
        if isinstance(choices, list):
            piece, thought = self._from_choices(choices, stream)
        elif "content" in obj:  # llama-server native /completion
            piece, thought = self._from_native(obj), None
        else:
            return
        self._add(self.thoughts, thought, t)
        self._add(self.pieces, piece, t)

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
