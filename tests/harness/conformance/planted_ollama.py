"""A scripted Ollama server for the ``ollama.*`` checks, one planted fault at a time.

``PlantedOllama(mode)`` answers as Ollama's API documents when ``mode`` is ``ok`` (its
one model ``planted`` also embeds); every other mode plants one violation, named in
``MODES`` with the checks it must fail (all other Ollama checks must still pass).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from server_core.sse import encode_event
from tests.harness.conformance.support import _Tracking, reactor

__all__ = ["MODES", "NA_MODES", "planted_ollama"]

MODEL = "planted"
TEXT = ["Hello", " there", " friend"]
STAMP = "2025-01-01T00:00:00Z"
TIMINGS = {
    "total_duration": 9000,
    "load_duration": 1000,
    "prompt_eval_count": 5,
    "prompt_eval_duration": 2000,
    "eval_count": 3,
    "eval_duration": 6000,
}
CHAT_STREAM = {"ollama.chat.stream.framing", "ollama.chat.stream.done_last"}
ERRORS = {
    "ollama.errors.unknown_model",
    "ollama.errors.show_unknown_model",
    "ollama.errors.invalid_json",
    "ollama.errors.missing_model",
    "ollama.errors.messages_type",
}

# mode -> the checks it must fail.
MODES: dict[str, set[str]] = {
    "ok": set(),
    # Ollama leaves zero metrics out (omitempty): a warm model, a cached prompt. Fine.
    "omitted_zeros": set(),
    "version_word": {"ollama.version"},
    "tags_other_model": {"ollama.tags"},
    "tags_bad_size": {"ollama.tags"},
    "show_no_completion": {"ollama.show.shape"},
    "show_no_context": {"ollama.show.context_length"},
    "ps_no_expiry": {"ollama.ps"},
    "openai_errors": ERRORS,
    "unknown_model_200": {"ollama.errors.unknown_model"},
    "after_done": CHAT_STREAM | {"ollama.chat.stream.timings"},
    "error_line": {
        "ollama.chat.stream.done_last",
        "ollama.chat.stream.timings",
        "ollama.chat.stream_matches_nonstream",
    },
    "no_done": {
        "ollama.chat.stream.done_last",
        "ollama.chat.stream.timings",
        "ollama.chat.stream_matches_nonstream",
    },
    "blank_line": CHAT_STREAM,
    "sse": CHAT_STREAM | {"ollama.chat.stream.timings"},
    "hang": {"ollama.chat.stream.done_last"},
    "null_content": {"ollama.chat.stream.framing"},
    "no_eval_duration": {"ollama.chat.stream.timings"},
    "bad_done_reason": {"ollama.chat.stream.timings", "ollama.chat.stream_matches_nonstream"},
    "text_mismatch": {"ollama.chat.stream_matches_nonstream"},
    "whole_not_done": {"ollama.chat.nonstream"},
    "gen_no_done": {
        "ollama.generate.stream.done_last",
        "ollama.generate.stream.timings",
        "ollama.generate.stream_matches_nonstream",
    },
    "gen_no_response": {"ollama.generate.nonstream", "ollama.generate.stream_matches_nonstream"},
    "embed_unequal": {"ollama.embed"},
    "embed_openai_refusal": {"ollama.embed"},
}

# mode -> the checks it makes n/a (a server the check cannot judge; all others pass).
NA_MODES: dict[str, set[str]] = {
    "embed_refused": {"ollama.embed"},
    "nondeterministic": {
        "ollama.chat.stream_matches_nonstream",
        "ollama.generate.stream_matches_nonstream",
    },
    "no_model_info": {"ollama.show.context_length"},
    "ps_empty": {"ollama.ps"},
}


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def text_part(kind: str, text: str | None) -> dict[str, Any]:
    """Where the text goes: chat's ``message``, generate's ``response``."""
    if kind == "chat":
        return {"message": {"role": "assistant", "content": text}}
    return {"response": text}


def done_line(kind: str, mode: str, text: str = "") -> dict[str, Any]:
    """The last object of a stream (or a whole answer, with its ``text``)."""
    timings = dict(TIMINGS)
    if mode == "no_eval_duration":
        del timings["eval_duration"]
    if mode == "omitted_zeros":
        for key in ("load_duration", "prompt_eval_count", "prompt_eval_duration"):
            del timings[key]
    reason = "finished" if mode == "bad_done_reason" else "stop"
    head = {"model": MODEL, "created_at": STAMP, **text_part(kind, text)}
    return {**head, "done": True, "done_reason": reason, **timings}


def stream_lines(kind: str, mode: str) -> list[bytes]:
    """The lines of a stream in ``mode`` (``gen_*`` modes plant faults in generate only)."""
    if kind == "generate":
        mode = mode[len("gen_") :] if mode.startswith("gen_") else "ok"
    elif mode.startswith("gen_"):
        mode = "ok"
    words = [*TEXT[:-1], TEXT[-1] + "!"] if mode == "text_mismatch" else TEXT
    out = [
        _line({"model": MODEL, "created_at": STAMP, **text_part(kind, w), "done": False})
        for w in words
    ]
    if mode == "null_content":
        out.insert(1, _line({"model": MODEL, "created_at": STAMP, **text_part(kind, None)}))
    if mode == "blank_line":
        out.insert(1, b"\n")
    if mode == "error_line":
        out.append(_line({"error": "upstream lost"}))
    elif mode != "no_done":
        out.append(_line(done_line(kind, mode)))
    if mode == "after_done":
        out.append(out[0])
    return out


def _error(request: Request, status: int, message: str, mode: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    if mode == "openai_errors":
        return json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
    return json.dumps({"error": message}).encode()


class PlantedOllama(Resource):
    """Ollama's routes, answering as ``mode`` says (see ``MODES``)."""

    isLeaf = True

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.answers = 0  # whole answers given (the nondeterministic mode varies them)

    def _json(self, request: Request, obj: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        return json.dumps(obj).encode()

    def _entry(self) -> dict[str, Any]:
        details = {"format": "gguf", "family": "llama", "parameter_size": "1B"}
        name = "other" if self.mode == "tags_other_model" else f"{MODEL}:latest"
        size: Any = "big" if self.mode == "tags_bad_size" else 1234
        return {
            "name": name,
            "model": name,
            "size": size,
            "digest": "sha256:ab",
            "details": details,
        }

    def render_GET(self, request: Request) -> bytes:
        path = request.path.decode()
        if path == "/api/version":
            return self._json(
                request, {"version": "latest" if self.mode == "version_word" else "0.12.3"}
            )
        if path == "/api/tags":
            return self._json(request, {"models": [{**self._entry(), "modified_at": STAMP}]})
        if path == "/api/ps":
            entry = {**self._entry(), "name": f"{MODEL}:latest", "model": f"{MODEL}:latest"}
            entry["size"], entry["size_vram"] = 1234, 0
            if self.mode != "ps_no_expiry":
                entry["expires_at"] = STAMP
            return self._json(request, {"models": [] if self.mode == "ps_empty" else [entry]})
        return _error(request, 404, "404 page not found", self.mode)

    def render_POST(self, request: Request) -> Any:
        assert request.content is not None
        try:
            body = json.loads(request.content.read() or b"null")
        except ValueError:
            return _error(request, 400, "invalid character", self.mode)
        path = request.path.decode()
        if not isinstance(body, dict):
            return _error(request, 400, "bad body", self.mode)
        if not body.get("model"):
            return _error(request, 400, "model is required", self.mode)
        if body["model"] not in (MODEL, f"{MODEL}:latest"):
            if self.mode == "unknown_model_200" and path == "/api/chat":
                request.setHeader(b"content-type", b"application/x-ndjson")
                return _line({"error": f"model {body['model']!r} not found"})
            return _error(request, 404, f"model {body['model']!r} not found", self.mode)
        handler = {
            "/api/show": self._show,
            "/api/chat": self._generation,
            "/api/generate": self._generation,
            "/api/embed": self._embed,
        }.get(path)
        if handler is None:
            return _error(request, 404, "404 page not found", self.mode)
        return handler(request, body)

    def _show(self, request: Request, body: dict[str, Any]) -> bytes:
        caps = ["embedding"] if self.mode == "show_no_completion" else ["completion", "embedding"]
        if self.mode in ("embed_openai_refusal", "embed_refused"):
            caps = ["completion"]
        info: dict[str, Any] = {"general.architecture": "llama", "general.basename": "Tiny"}
        if self.mode != "show_no_context":
            info["llama.context_length"] = 4096
        if self.mode == "no_model_info":
            info = {}
        details = {"format": "gguf", "family": "llama"}
        return self._json(request, {"details": details, "model_info": info, "capabilities": caps})

    def _generation(self, request: Request, body: dict[str, Any]) -> Any:
        kind = "chat" if request.path == b"/api/chat" else "generate"
        if kind == "chat" and not isinstance(body.get("messages"), list):
            return _error(request, 400, "cannot unmarshal string into messages", self.mode)
        if body.get("stream", True) is False:
            self.answers += 1
            text = "".join(TEXT)
            if self.mode == "nondeterministic":
                text += f" {self.answers}"
            answer = done_line(kind, "ok", text)  # the stream modes plant nothing here
            if kind == "chat" and self.mode == "whole_not_done":
                answer["done"] = False
            if kind == "generate" and self.mode == "gen_no_response":
                del answer["response"]
            return self._json(request, answer)
        lines = stream_lines(kind, self.mode)
        if kind == "chat" and self.mode == "sse":
            request.setHeader(b"content-type", b"text/event-stream")
            return b"".join(encode_event(line.decode().rstrip("\n")) for line in lines)
        request.setHeader(b"content-type", b"application/x-ndjson")
        if kind == "chat" and self.mode == "hang":
            request.write(b"".join(lines))  # complete, but the body never ends
            return NOT_DONE_YET
        return b"".join(lines)

    def _embed(self, request: Request, body: dict[str, Any]) -> bytes:
        if self.mode == "embed_refused":
            return _error(request, 501, "this model does not support embeddings", self.mode)
        if self.mode == "embed_openai_refusal":
            request.setResponseCode(501)
            request.setHeader(b"content-type", b"application/json")
            return b'{"error": {"message": "no embeddings", "type": "server_error"}}'
        second = [0.3] if self.mode == "embed_unequal" else [0.3, 0.4]
        return self._json(request, {"model": MODEL, "embeddings": [[0.1, 0.2], second]})


@asynccontextmanager
async def planted_ollama(mode: str) -> AsyncIterator[str]:
    """A ``PlantedOllama(mode)`` server on a free loopback port, for one test."""
    factory = _Tracking(Site(PlantedOllama(mode)))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        yield f"http://127.0.0.1:{port.getHost().port}"
    finally:
        await port.stopListening()
        await factory.wait_idle()
