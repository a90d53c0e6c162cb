"""A scripted server for the Responses, Messages and native checks, one fault at a time.

``PlantedDialects(mode)`` answers like llama-server (with Anthropic-shaped Messages
errors and 400s for bad input) when ``mode`` is ``ok``; every other mode plants one
violation, named in ``MODES`` with the checks it must fail.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from harness.conformance.checks.native import ROUND_TRIP_TEXT
from server_core.sse import encode_event
from tests.harness.conformance.support import _Tracking, reactor

__all__ = ["MODES", "planted_dialects"]

TEXT = ["Hello", " there", " friend"]

# mode -> the checks it must fail (every other new check must pass).
MODES: dict[str, set[str]] = {
    "ok": set(),
    "resp_after_completed": {"responses.stream.completed_last"},
    "resp_no_completed": {
        "responses.stream.completed_last",
        "responses.stream.order",
        "responses.stream.text",
        "responses.stream.usage",
    },
    "resp_failed": {
        "responses.stream.completed_last",
        "responses.stream.order",
        "responses.stream.text",
        "responses.stream.usage",
    },
    "resp_text_mismatch": {"responses.stream.text"},
    "resp_order": {"responses.stream.order"},
    "resp_bad_usage": {"responses.stream.usage", "responses.nonstream.shape"},
    "resp_name_mismatch": {"responses.stream.framing"},
    "resp_200_errors": {
        "responses.errors.missing_input",
        "responses.errors.input_type",
        "responses.errors.stream_before_first_byte",
    },
    "msg_after_stop": {"messages.stream.stop_last"},
    "msg_error_event": {"messages.stream.stop_last"},
    "msg_no_stop_reason": {"messages.stream.stop_reason"},
    "msg_bad_index": {"messages.stream.order"},
    "msg_start_not_first": {"messages.stream.message_start"},
    "msg_openai_errors": {"messages.errors.shape"},
    "msg_500_errors": {
        "messages.errors.missing_messages",
        "messages.errors.messages_type",
        "messages.errors.shape",
    },
    "msg_bodies": {"messages.nonstream.shape", "messages.count_tokens"},
    "native_after_stop": {"native.stream.stop_last", "native.stream.content"},
    "native_no_stop": {"native.stream.stop_last"},
    "native_hang": {"native.stream.stop_last"},
    "native_not_json": {
        "native.stream.framing",
        "native.stream.stop_last",
        "native.stream.content",
    },
    "native_nonstream": {"native.completion.nonstream"},
    "native_roundtrip": {"native.tokenize_roundtrip"},
    "native_template": {"native.apply_template"},
    "native_info": {"native.props", "native.health"},
}


def _named(name: str, **payload: Any) -> bytes:
    return encode_event(json.dumps({"type": name, **payload}), event=name)


def _response(text: str, usage: dict[str, int] | None = None) -> dict[str, Any]:
    part = {"type": "output_text", "annotations": [], "text": text}
    item = {"type": "message", "id": "msg_1", "role": "assistant", "content": [part]}
    usage = usage or {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8}
    return {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "output": [item],
        "usage": usage,
    }


def responses_stream(mode: str) -> bytes:
    usage = (
        {"input_tokens": 5, "output_tokens": 3, "total_tokens": 9}
        if mode == "resp_bad_usage"
        else None
    )
    item = {"type": "message", "id": "msg_1", "role": "assistant", "content": []}
    added = [
        _named("response.output_item.added", item=item),
        _named(
            "response.content_part.added", item_id="msg_1", part={"type": "output_text", "text": ""}
        ),
    ]
    out = [_named("response.created", response={"id": "resp_1"})]
    out.append(_named("response.in_progress", response={"id": "resp_1"}))
    out += added[::-1] if mode == "resp_order" else added
    out += [_named("response.output_text.delta", item_id="msg_1", delta=t) for t in TEXT]
    out.append(_named("response.output_text.done", item_id="msg_1", text="".join(TEXT)))
    out.append(_named("response.content_part.done", item_id="msg_1"))
    out.append(_named("response.output_item.done", item={**item, "content": []}))
    final = "".join(TEXT) + ("!" if mode == "resp_text_mismatch" else "")
    if mode == "resp_failed":
        out.append(_named("response.failed", response={"id": "resp_1", "status": "failed"}))
    elif mode != "resp_no_completed":
        out.append(_named("response.completed", response=_response(final, usage)))
    if mode == "resp_after_completed":
        out.append(_named("response.audit", note="late"))
    if mode == "resp_name_mismatch":
        out[1] = encode_event(json.dumps({"type": "response.in_progress"}), event="progress")
    return b"".join(out)


def messages_stream(mode: str) -> bytes:
    start = _named(
        "message_start",
        message={
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [],
            "usage": {"input_tokens": 5},
        },
    )
    block = [_named("content_block_start", index=0, content_block={"type": "text", "text": ""})]
    if mode == "msg_start_not_first":
        out = [*block, start]
    else:
        out = [start, *block]
    for i, t in enumerate(TEXT):
        index = 1 if mode == "msg_bad_index" and i == 1 else 0
        out.append(
            _named("content_block_delta", index=index, delta={"type": "text_delta", "text": t})
        )
    out.append(_named("ping"))
    out.append(_named("content_block_stop", index=0))
    reason = None if mode == "msg_no_stop_reason" else "end_turn"
    out.append(_named("message_delta", delta={"stop_reason": reason}, usage={"output_tokens": 3}))
    if mode == "msg_error_event":
        err = {"type": "error", "error": {"type": "api_error", "message": "boom"}}
        out.append(encode_event(json.dumps(err), event="error"))
    out.append(_named("message_stop"))
    if mode == "msg_after_stop":
        out.append(_named("ping"))
    return b"".join(out)


def native_stream(mode: str) -> bytes:
    out = [encode_event(json.dumps({"content": t, "stop": False})) for t in TEXT]
    if mode == "native_not_json":
        out.insert(1, encode_event("{not json"))
    if mode != "native_no_stop":
        out.append(encode_event(json.dumps({"content": "", "stop": True, "tokens_predicted": 3})))
    if mode == "native_after_stop":
        out.append(encode_event(json.dumps({"content": " late", "stop": False})))
    return b"".join(out)


def _error(request: Request, status: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body).encode()


def _openai_error(request: Request, status: int, message: str) -> bytes:
    return _error(request, status, {"error": {"code": status, "message": message, "type": "x"}})


class PlantedDialects(Resource):
    """The new routes, answering as ``mode`` says (see ``MODES``)."""

    isLeaf = True

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def render_GET(self, request: Request) -> bytes:
        path = request.path.decode()
        if path == "/v1/models":
            return self._json(
                request, {"object": "list", "data": [{"id": "planted", "object": "model"}]}
            )
        if path == "/props":
            key = "settings" if self.mode == "native_info" else "default_generation_settings"
            return self._json(request, {key: {"n_ctx": 4096}})
        if path == "/health":
            if self.mode == "native_info":
                return _openai_error(request, 503, "Loading model")
            return self._json(request, {"status": "ok"})
        return _openai_error(request, 404, "File Not Found")

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        body = json.loads(request.content.read() or b"null")
        path = request.path.decode()
        handler = {
            "/v1/responses": self._responses,
            "/v1/messages": self._messages,
            "/v1/messages/count_tokens": self._count_tokens,
            "/completion": self._native,
            "/tokenize": self._tokenize,
            "/detokenize": self._detokenize,
            "/apply-template": self._apply_template,
        }.get(path)
        if handler is None or not isinstance(body, dict):
            return _openai_error(request, 404, "File Not Found")
        return handler(request, body)

    def _json(self, request: Request, obj: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(obj).encode()

    def _sse(self, request: Request, data: bytes) -> bytes:
        request.setHeader(b"content-type", b"text/event-stream")
        return data

    def _responses(self, request: Request, body: dict[str, Any]) -> bytes:
        if not isinstance(body.get("input"), (str, list)):
            if self.mode == "resp_200_errors":
                err = {"type": "error", "code": "invalid", "message": "bad input", "param": None}
                return self._sse(request, encode_event(json.dumps(err), event="error"))
            return _openai_error(request, 400, "'input' is required")
        if body.get("stream"):
            return self._sse(request, responses_stream(self.mode))
        usage = {"input_tokens": 5, "output_tokens": 3, "total_tokens": 9}
        return self._json(
            request, _response("".join(TEXT), usage if self.mode == "resp_bad_usage" else None)
        )

    def _messages_error(self, request: Request) -> bytes:
        if self.mode == "msg_500_errors":
            return _openai_error(request, 500, "'messages' is required")
        if self.mode == "msg_openai_errors":
            return _openai_error(request, 400, "'messages' is required")
        err = {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "bad messages"},
        }
        return _error(request, 400, err)

    def _messages(self, request: Request, body: dict[str, Any]) -> bytes:
        if not isinstance(body.get("messages"), list):
            return self._messages_error(request)
        if body.get("stream"):
            return self._sse(request, messages_stream(self.mode))
        content: Any = [{"type": "text", "text": "".join(TEXT)}]
        if self.mode == "msg_bodies":
            content = "".join(TEXT)
        usage = {"input_tokens": 5, "output_tokens": 3}
        msg = {"id": "msg_1", "type": "message", "role": "assistant", "content": content}
        return self._json(request, {**msg, "stop_reason": "end_turn", "usage": usage})

    def _count_tokens(self, request: Request, body: dict[str, Any]) -> bytes:
        return self._json(request, {"input_tokens": "5" if self.mode == "msg_bodies" else 5})

    def _native(self, request: Request, body: dict[str, Any]) -> Any:
        if body.get("stream") and self.mode == "native_hang":
            # A complete stream whose body never ends: the connection stays open.
            request.write(self._sse(request, native_stream(self.mode)))
            return NOT_DONE_YET
        if body.get("stream"):
            return self._sse(request, native_stream(self.mode))
        if self.mode == "native_nonstream":
            return self._json(request, {"text": "".join(TEXT), "stop": True})
        return self._json(request, {"content": "".join(TEXT), "stop": True})

    def _tokenize(self, request: Request, body: dict[str, Any]) -> bytes:
        words = str(body.get("content", "")).split()
        return self._json(request, {"tokens": [100 + i for i in range(len(words))]})

    def _detokenize(self, request: Request, body: dict[str, Any]) -> bytes:
        words = ROUND_TRIP_TEXT.split()
        if self.mode == "native_roundtrip":
            words = words[::-1]
        return self._json(request, {"content": " " + " ".join(words[: len(body["tokens"])])})

    def _apply_template(self, request: Request, body: dict[str, Any]) -> bytes:
        if self.mode == "native_template":
            return self._json(request, {"prompt": "<|user|>\n<|assistant|>"})
        return self._json(
            request, {"prompt": f"<|user|>{body['messages'][0]['content']}<|assistant|>"}
        )


@asynccontextmanager
async def planted_dialects(mode: str) -> AsyncIterator[str]:
    """A ``PlantedDialects(mode)`` server on a free loopback port, for one test."""
    factory = _Tracking(Site(PlantedDialects(mode)))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        yield f"http://127.0.0.1:{port.getHost().port}"
    finally:
        await port.stopListening()
        await factory.wait_idle()
