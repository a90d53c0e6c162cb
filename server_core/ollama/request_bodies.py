"""Ollama request bodies as llama-server (OpenAI-compatible) request bodies.

``/api/chat`` and ``/api/generate`` become ``/chat/completions`` (``/completions`` for a
``raw`` generate), ``/api/embed`` and ``/api/embeddings`` become ``/embeddings``. Each
translation validates what it reads and refuses, with a 400 that names the field, what
it cannot carry over: a client must never get an answer to another question than the one
it asked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server_core.errors import BadRequest
from server_core.ollama.keep_alive import parse_keep_alive
from server_core.ollama.options import map_options

__all__ = [
    "Translated",
    "chat_request",
    "embed_request",
    "embeddings_request",
    "generate_request",
    "model_of",
]

_ROLES = frozenset({"system", "user", "assistant", "tool"})
# The first bytes of base64-encoded images, for the data: URL llama-server reads.
_IMAGE_TYPES = (("iVBOR", "image/png"), ("/9j/", "image/jpeg"), ("R0lG", "image/gif"))


@dataclass(frozen=True)
class Translated:
    """One Ollama request as the llama-server request that answers it."""

    endpoint: str
    """``/chat/completions``, ``/completions`` or ``/embeddings``."""
    body: dict[str, Any]
    model: str
    stream: bool = False
    keep_alive: float | None = None
    images: bool = False
    """The request carries images (the model must be able to see)."""


def _bad(param: str, message: str) -> BadRequest:
    return BadRequest(message, param=param)


def model_of(body: Mapping[str, Any]) -> str:
    """The ``model`` an Ollama request names (Ollama calls it ``name`` in older clients)."""
    model = body.get("model", body.get("name"))
    if not isinstance(model, str) or not model.strip():
        raise _bad("model", "'model' is required: the name of a model /api/tags lists.")
    return model


def _stream(body: Mapping[str, Any]) -> bool:
    stream = body.get("stream", True)
    if stream is None:
        return True
    if not isinstance(stream, bool):
        raise _bad("stream", "'stream' must be true or false.")
    return stream


def _text(value: Any, param: str, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise _bad(param, f"'{param}' must be a string.")
    return value


def _format(value: Any) -> dict[str, Any]:
    """``format``: ``"json"`` or a JSON schema, as llama-server's ``response_format``."""
    if value in (None, ""):
        return {}
    if value == "json":
        return {"response_format": {"type": "json_object"}}
    if isinstance(value, dict):
        schema = {"name": "response", "schema": value}
        return {"response_format": {"type": "json_schema", "json_schema": schema}}
    raise _bad("format", "'format' must be \"json\" or a JSON schema object.")


def _think(value: Any) -> dict[str, Any]:
    """``think``: false turns the template's thinking off; true and levels keep it on."""
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"chat_template_kwargs": {"enable_thinking": value}}
    if value in ("low", "medium", "high"):
        return {"chat_template_kwargs": {"enable_thinking": True}, "reasoning_effort": value}
    raise _bad("think", '\'think\' must be true, false, "low", "medium" or "high".')


def _image_url(data: Any, param: str) -> dict[str, Any]:
    if not isinstance(data, str) or not data:
        raise _bad(param, f"'{param}' must be a base64-encoded image.")
    if data.startswith("data:"):
        return {"type": "image_url", "image_url": {"url": data}}
    kind = next((t for prefix, t in _IMAGE_TYPES if data.startswith(prefix)), "image/png")
    return {"type": "image_url", "image_url": {"url": f"data:{kind};base64,{data}"}}


def _content(text: str | None, images: Any, where: str) -> str | list[dict[str, Any]]:
    """A message's content: its text, with its images as OpenAI content parts."""
    if images in (None, []):
        return text or ""
    if not isinstance(images, list):
        raise _bad(f"{where}.images", f"'{where}.images' must be a list of base64 images.")
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    parts += [_image_url(img, f"{where}.images[{i}]") for i, img in enumerate(images)]
    return parts


def _tool_calls(calls: Any, where: str) -> list[dict[str, Any]]:
    """An assistant's Ollama tool calls (arguments an object) in OpenAI's shape (a string)."""
    if not isinstance(calls, list):
        raise _bad(f"{where}.tool_calls", f"'{where}.tool_calls' must be a list.")
    out = []
    for i, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise _bad(f"{where}.tool_calls[{i}]", "each tool call needs a function name.")
        arguments = function.get("arguments", {}) if isinstance(function, dict) else {}
        text = arguments if isinstance(arguments, str) else json.dumps(arguments)
        call_id = call.get("id") or f"call_{i}"
        out.append(
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}
        )
    return out


def _message(message: Any, i: int) -> dict[str, Any]:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise _bad(where, f"'{where}' must be an object with a role and a content.")
    role = message.get("role")
    if role not in _ROLES:
        raise _bad(f"{where}.role", f"'{where}.role' must be one of {', '.join(sorted(_ROLES))}.")
    text = _text(message.get("content"), f"{where}.content")
    out: dict[str, Any] = {"role": role, "content": _content(text, message.get("images"), where)}
    if message.get("tool_calls") and role == "assistant":
        out["tool_calls"] = _tool_calls(message["tool_calls"], where)
    if role == "tool":
        name = message.get("tool_name", message.get("name"))
        if isinstance(name, str):
            out["name"] = name
        if isinstance(message.get("tool_call_id"), str):
            out["tool_call_id"] = message["tool_call_id"]
    thinking = message.get("thinking")
    if role == "assistant" and isinstance(thinking, str) and thinking:
        out["reasoning_content"] = thinking
    return out


def _tools(tools: Any) -> dict[str, Any]:
    if tools in (None, []):
        return {}
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise _bad("tools", "'tools' must be a list of tool objects.")
    out = []
    for i, tool in enumerate(tools):
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _bad(f"tools[{i}]", f"'tools[{i}]' needs a function with a name.")
        out.append({**tool, "type": tool.get("type") or "function"})
    return {"tools": out}


def _generation(body: Mapping[str, Any], stream: bool) -> dict[str, Any]:
    """What chat and generate share: options, format, thinking, streaming with usage."""
    out = {**map_options(body.get("options")), **_format(body.get("format"))}
    out.update(_think(body.get("think")))
    out["stream"] = stream
    if stream:
        out["stream_options"] = {"include_usage": True}
    return out


def chat_request(body: Mapping[str, Any]) -> Translated:
    """``POST /api/chat`` as ``/chat/completions``."""
    model = model_of(body)
    messages = body.get("messages")
    if messages is None:
        messages = []
    if not isinstance(messages, list):
        raise _bad("messages", "'messages' must be a list of messages.")
    translated = [_message(m, i) for i, m in enumerate(messages)]
    stream = _stream(body)
    outgoing = {"model": model, "messages": translated, **_generation(body, stream)}
    outgoing.update(_tools(body.get("tools")))
    images = any(isinstance(m["content"], list) for m in translated)
    keep_alive = parse_keep_alive(body.get("keep_alive"))
    return Translated("/chat/completions", outgoing, model, stream, keep_alive, images)


def generate_request(body: Mapping[str, Any]) -> Translated:
    """``POST /api/generate`` as ``/chat/completions``, or ``/completions`` when ``raw``."""
    model = model_of(body)
    prompt = _text(body.get("prompt"), "prompt") or ""
    system = _text(body.get("system"), "system")
    if _text(body.get("suffix"), "suffix"):
        raise _bad(
            "suffix",
            "'suffix' (fill-in-the-middle) is not served on /api/generate here; send it to "
            "llama-server's /infill route as input_prefix and input_suffix.",
        )
    if _text(body.get("template"), "template"):
        raise _bad("template", "'template' cannot be overridden: the model's own is used.")
    stream = _stream(body)
    keep_alive = parse_keep_alive(body.get("keep_alive"))
    if body.get("raw") is True:
        if body.get("images"):
            raise _bad("images", "'images' need the chat template; send them without 'raw'.")
        outgoing = {"model": model, "prompt": prompt, **_generation(body, stream)}
        outgoing.pop("chat_template_kwargs", None)
        outgoing.pop("reasoning_effort", None)
        return Translated("/completions", outgoing, model, stream, keep_alive)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    content = _content(prompt, body.get("images"), "prompt")
    messages.append({"role": "user", "content": content})
    outgoing = {"model": model, "messages": messages, **_generation(body, stream)}
    return Translated(
        "/chat/completions", outgoing, model, stream, keep_alive, isinstance(content, list)
    )


def embed_request(body: Mapping[str, Any]) -> Translated:
    """``POST /api/embed`` (``input``: a string or a list of strings) as ``/embeddings``."""
    model = model_of(body)
    given = body.get("input")
    inputs = [given] if isinstance(given, str) else given
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise _bad("input", "'input' must be a string or a non-empty list of strings.")
    outgoing: dict[str, Any] = {"model": model, "input": inputs}
    dimensions = body.get("dimensions")
    if dimensions is not None:
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
            raise _bad("dimensions", "'dimensions' must be a positive integer.")
        outgoing["dimensions"] = dimensions
    keep_alive = parse_keep_alive(body.get("keep_alive"))
    return Translated("/embeddings", outgoing, model, False, keep_alive)


def embeddings_request(body: Mapping[str, Any]) -> Translated:
    """The older ``POST /api/embeddings`` (one ``prompt``) as ``/embeddings``."""
    model = model_of(body)
    prompt = _text(body.get("prompt"), "prompt", required=True)
    keep_alive = parse_keep_alive(body.get("keep_alive"))
    outgoing = {"model": model, "input": [prompt]}
    return Translated("/embeddings", outgoing, model, False, keep_alive)
