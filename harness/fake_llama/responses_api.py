"""The OpenAI Responses API (``/v1/responses``) as llama-server serves it.

llama-server turns a Responses request into a chat request
(``server_chat_convert_responses_to_chatcmpl`` in tools/server/server-chat.cpp) and
generates it like one, so the fake does the same: ``responses_to_chat`` is that
conversion (same checks, same messages) and the text is the chat text of the
converted messages. ``ResponsesPayloads`` is the answer in llama-server's shapes
(server-task.cpp: ``to_json_oaicompat_resp``, ``to_json_oaicompat_resp_stream`` and
the partial result's ``to_json_oaicompat_resp``). No reasoning and no tool calls:
the fake's "model" produces text only.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from harness.fake_llama.generate import Generation, RequestError
from harness.fake_llama.meter import TokenMeter
from harness.fake_llama.payloads import SseEvent, random_id

__all__ = ["ResponsesPayloads", "responses_to_chat"]

_INVALID = "invalid_request_error"


def _bad(message: str) -> RequestError:
    # std::invalid_argument: ex_wrapper answers 400 invalid_request_error.
    return RequestError(400, message, _INVALID)


def _is_str(item: Mapping[str, Any], key: str) -> bool:
    return isinstance(item.get(key), str)


def _is_list(item: Mapping[str, Any], key: str) -> bool:
    return isinstance(item.get(key), list)


def responses_to_chat(body: Any) -> dict[str, Any]:
    """The chat-completions body llama-server makes of a Responses body (400 on misuse)."""
    if not isinstance(body, dict) or "input" not in body:
        raise _bad("'input' is required")
    if isinstance(body.get("previous_response_id"), str) and body["previous_response_id"]:
        raise _bad("llama.cpp does not support 'previous_response_id'.")
    chat = {k: v for k, v in body.items() if k not in ("input", "instructions")}
    messages: list[dict[str, Any]] = []
    if "instructions" in body:
        instructions = body["instructions"]
        messages.append(
            {"role": "system", "content": instructions if isinstance(instructions, str) else ""}
        )
    value = body["input"]
    if isinstance(value, str):
        messages.append({"role": "user", "content": value})
    elif isinstance(value, list):
        for item in value:
            _add_item(messages, dict(item) if isinstance(item, dict) else {})
    else:
        raise _bad("'input' must be a string or array of objects")
    chat["messages"] = messages
    if "max_output_tokens" in body:
        chat.pop("max_output_tokens")
        chat["max_tokens"] = body["max_output_tokens"]
    reasoning = chat.pop("reasoning", None)
    if isinstance(reasoning, dict) and "effort" in reasoning:
        chat["reasoning_effort"] = reasoning["effort"]
    chat.pop("tools", None)  # the fake never calls tools
    return chat


def _add_item(messages: list[dict[str, Any]], item: dict[str, Any]) -> None:
    """One ``input`` item, converted and appended (or merged into the assistant turn)."""
    merge = bool(messages) and messages[-1].get("role") == "assistant"
    if _is_str(item, "content"):
        item["content"] = [{"text": item["content"], "type": "input_text"}]
    role = item.get("role")
    if _is_list(item, "content") and role in ("user", "system", "developer"):
        item.pop("type", None)
        item.pop("status", None)
        item["content"] = [_input_part(p if isinstance(p, dict) else {}) for p in item["content"]]
        messages.append(item)
    elif role == "assistant" and item.get("type") == "message":
        parts: list[Any] = item["content"] if _is_list(item, "content") else []
        content = [_output_part(p if isinstance(p, dict) else {}) for p in parts]
        if merge:
            prev = messages[-1]
            if not isinstance(prev.get("content"), list):
                prev["content"] = []
            prev["content"].extend(content)
        else:
            item.pop("status", None)
            item.pop("type", None)
            item["content"] = content
            messages.append(item)
    elif item.get("type") == "function_call" and all(
        _is_str(item, k) for k in ("arguments", "call_id", "name")
    ):
        call: dict[str, Any] = {
            "function": {"arguments": item["arguments"], "name": item["name"]},
            "id": item["call_id"],
            "type": "function",
        }
        if merge:
            messages[-1].setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "tool_calls": [call]})
    elif item.get("type") == "function_call_output" and _is_str(item, "call_id"):
        _add_tool_output(messages, item)
    elif item.get("type") == "reasoning" and _is_list(item, "summary"):
        _add_reasoning(messages, item, merge)
    else:
        raise _bad("Cannot determine type of 'item'")


def _input_part(part: Mapping[str, Any]) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "input_text":
        if "text" not in part:
            raise _bad("'Input text' requires 'text'")
        return {"text": part["text"], "type": "text"}
    if kind == "input_image":
        if "image_url" not in part:
            raise _bad("'image_url' is required")
        return {"image_url": {"url": part["image_url"]}, "type": "image_url"}
    if kind == "input_file":
        raise _bad("'input_file' is not supported by llamacpp at this moment")
    raise _bad("'type' must be one of 'input_text', 'input_image', or 'input_file'")


def _output_part(part: Mapping[str, Any]) -> dict[str, Any]:
    kind = part.get("type")
    if kind in ("output_text", "input_text"):
        if not _is_str(part, "text"):
            raise _bad("'Output text' requires 'text'")
        return {"text": part["text"], "type": "text"}
    if kind == "refusal":
        if not _is_str(part, "refusal"):
            raise _bad("'Refusal' requires 'refusal'")
        return {"refusal": part["refusal"], "type": "refusal"}
    raise _bad("'type' must be one of 'output_text' or 'refusal'")


def _add_tool_output(messages: list[dict[str, Any]], item: Mapping[str, Any]) -> None:
    output = item.get("output")
    if not isinstance(output, str | list):
        raise _bad("Cannot determine type of 'item'")
    if isinstance(output, list):
        converted = []
        for part in output:
            if not isinstance(part, dict) or "type" not in part:
                raise _bad("Output of tool call missing 'type' field")
            if part["type"] not in ("input_text", "input_image"):
                raise _bad("Output of tool call should be 'Input text' or 'Input image'")
            converted.append(
                {**part, "type": "text" if part["type"] == "input_text" else "image_url"}
            )
        output = converted
    messages.append({"content": output, "role": "tool", "tool_call_id": item["call_id"]})


def _add_reasoning(messages: list[dict[str, Any]], item: Mapping[str, Any], merge: bool) -> None:
    content = item.get("content")
    if not isinstance(content, list):
        raise _bad("item['content'] is not an array")
    if not content:
        raise _bad("item['content'] is empty")
    if not isinstance(content[0], dict) or not _is_str(content[0], "text"):
        raise _bad("item['content']['text'] is not a string")
    if merge:
        messages[-1]["reasoning_content"] = content[0]["text"]
    else:
        messages.append(
            {"role": "assistant", "content": [], "reasoning_content": content[0]["text"]}
        )


class ResponsesPayloads:
    """Every payload of one Responses answer (``StreamPayloads``)."""

    done_marker: str | None = None  # the stream ends with response.completed, no [DONE]
    legacy_done: str | None = None

    def __init__(
        self, gen: Generation, meter: TokenMeter, *, rng: random.Random, created: int, alias: str
    ) -> None:
        self.gen = gen
        self.meter = meter
        self.created = created
        self.alias = alias
        self.resp_id = "resp_" + random_id(rng)
        self.msg_id = "msg_" + random_id(rng)  # the stream's message item
        self.plain_msg_id = "msg_" + random_id(rng)  # the non-stream one draws a new id

    def _status(self, kind: str) -> SseEvent:
        response = {"id": self.resp_id, "object": "response", "status": "in_progress"}
        return kind, {"type": kind, "response": response}

    def token_events(self, index: int, token: str, slot: int) -> list[SseEvent]:
        """The first token opens the response, its message item and its text part."""
        events: list[SseEvent] = []
        if index == 0:
            item = {"content": [], "id": self.msg_id, "role": "assistant"}
            item.update(status="in_progress", type="message")
            part = {"type": "output_text", "text": ""}
            events += [
                self._status("response.created"),
                self._status("response.in_progress"),
                _event("response.output_item.added", item=item),
                _event("response.content_part.added", item_id=self.msg_id, part=part),
            ]
        events.append(_event("response.output_text.delta", item_id=self.msg_id, delta=token))
        return events

    def _text(self) -> str:
        return "".join(self.gen.tokens[: self.meter.n_sent])

    def _usage(self) -> dict[str, Any]:
        n_p, n_g = self.gen.n_prompt, self.meter.n_sent
        return {
            "input_tokens": n_p,
            "output_tokens": n_g,
            "total_tokens": n_p + n_g,
            "input_tokens_details": {"cached_tokens": 0},
        }

    def final_events(self, slot: int) -> list[SseEvent]:
        """The text's ``done`` events, then ``response.completed`` (with ``timings``)."""
        text = self._text()
        events: list[SseEvent] = []
        output: list[dict[str, Any]] = []
        if text:
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
            item: dict[str, Any] = {"type": "message", "status": "completed", "id": self.msg_id}
            item.update(content=[part], role="assistant")
            events += [
                _event("response.output_text.done", item_id=self.msg_id, text=text),
                _event("response.content_part.done", item_id=self.msg_id, part=part),
                _event("response.output_item.done", item=item),
            ]
            output.append(item)
        response = {
            "id": self.resp_id,
            "object": "response",
            "created_at": self.created,
            "status": "completed",
            "model": self.alias,
            "output": output,
            "usage": self._usage(),
        }
        completed = _event("response.completed", response=response)
        completed[1]["timings"] = self.meter.timings()
        return [*events, completed]

    def error_event(self, error: dict[str, Any]) -> SseEvent:
        """``data: {"error": {...}}``: llama-server's stream error outside Anthropic."""
        return None, {"error": error}

    def full_response(self, slot: int) -> dict[str, Any]:
        """``to_json_oaicompat_resp``: the response object, ``completed``."""
        text = self._text()
        output: list[dict[str, Any]] = []
        if text:
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
            output.append(
                {
                    "content": [part],
                    "id": self.plain_msg_id,
                    "role": "assistant",
                    "status": "completed",
                    "type": "message",
                }
            )
        return {
            "completed_at": self.created,
            "created_at": self.created,
            "id": self.resp_id,
            "model": self.alias,
            "object": "response",
            "output": output,
            "status": "completed",
            "usage": self._usage(),
        }


def _event(kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
    """A named event whose data carries its own ``type`` first, like llama-server's."""
    return kind, {"type": kind, **fields}
