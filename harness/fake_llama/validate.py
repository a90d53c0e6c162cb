"""Request-body checks llama-server makes before it generates, with its messages.

Each check raises ``RequestError`` (a 400 unless said otherwise) with the text
llama-server answers; the generation routes call them and then delegate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.fake_llama.generate import RequestError

__all__ = [
    "check_field_types",
    "check_n",
    "require_native_prompt",
    "require_oai_prompt",
    "validate_chat",
]

# Sampling fields llama-server reads with a typed getter: a wrong JSON type is a 400
# with nlohmann's message (checked against a real build of llama-cpp-python 0.3.36).
_NUMBER_FIELDS = (
    "n_predict", "max_tokens", "max_completion_tokens", "temperature", "top_k", "top_p",
    "min_p", "typical_p", "seed", "presence_penalty", "frequency_penalty", "repeat_penalty",
    "repeat_last_n", "n_probs", "n_keep", "mirostat", "mirostat_tau", "mirostat_eta",
)  # fmt: skip
_BOOL_FIELDS = ("stream", "ignore_eos", "cache_prompt")

_INVALID = "invalid_request_error"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def check_field_types(body: Mapping[str, Any]) -> None:
    """Sampling fields must have their JSON type (null is allowed)."""
    for names, wanted in ((_NUMBER_FIELDS, "number"), (_BOOL_FIELDS, "boolean")):
        for name in names:
            if name in body and body[name] is not None and _json_type(body[name]) != wanted:
                msg = (
                    f"Field '{name}': [json.exception.type_error.302] type must be {wanted}, "
                    f"but is {_json_type(body[name])}"
                )
                raise RequestError(400, msg, _INVALID)


def check_n(body: Mapping[str, Any]) -> None:
    """OpenAI's ``n``: llama-server generates one choice only."""
    n = body.get("n", 1)
    if isinstance(n, int) and not isinstance(n, bool) and n != 1:
        raise RequestError(400, "Only one completion choice is allowed", _INVALID)


def require_oai_prompt(body: Any) -> None:
    """``/v1/completions`` needs ``prompt``."""
    if not isinstance(body, dict) or "prompt" not in body:
        raise RequestError(400, '"prompt" is required', _INVALID)
    check_n(body)


def require_native_prompt(body: Any) -> None:
    """``/completion`` reads ``prompt`` with nlohmann's ``at()``."""
    if not isinstance(body, dict) or "prompt" not in body:
        msg = "[json.exception.out_of_range.403] key 'prompt' not found"
        raise RequestError(400, msg, _INVALID)


def validate_chat(body: Any) -> None:
    """The checks of llama-server's ``oaicompat_chat_params_parse`` (same messages)."""
    if not isinstance(body, dict) or "messages" not in body:
        raise RequestError(400, "'messages' is required", _INVALID)
    _check_response_format(body.get("response_format"))
    messages = body["messages"]
    if not isinstance(messages, list):
        raise RequestError(400, "Expected 'messages' to be an array", _INVALID)
    for msg in messages:
        _check_message(msg if isinstance(msg, dict) else {})
    check_n(body)


def _check_response_format(fmt: Any) -> None:
    if not isinstance(fmt, dict):
        return
    rtype = fmt.get("type") if isinstance(fmt.get("type"), str) else ""
    if rtype and rtype not in ("text", "json_object", "json_schema"):
        msg = f'response_format type must be one of "text" or "json_object", but got: {rtype}'
        raise RequestError(400, msg, _INVALID)


def _check_message(m: Mapping[str, Any]) -> None:
    role = m.get("role") if isinstance(m.get("role"), str) else ""
    if role != "assistant" and "content" not in m:
        raise RequestError(400, "All non-assistant messages must contain 'content'", _INVALID)
    if role == "assistant":
        if "content" not in m and "tool_calls" not in m:
            msg = "Assistant message must contain either 'content' or 'tool_calls'!"
            raise RequestError(400, msg, _INVALID)
        if "content" not in m:
            return
    content = m["content"]
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise RequestError(400, "Expected 'content' to be a string or an array", _INVALID)
    for part in content:
        _check_content_part(part)


def _check_content_part(part: Any) -> None:
    ptype = part.get("type") if isinstance(part, dict) else None
    if ptype == "text":
        return
    if ptype in ("image_url", "input_audio"):
        # A std::runtime_error in oaicompat_content_load_media: ex_wrapper answers 500.
        media = "image" if ptype == "image_url" else "audio"
        msg = (
            f"{media} input is not supported - hint: if this is unexpected, you may need "
            "to provide the mmproj"
        )
        raise RequestError(500, msg, "server_error")
    raise RequestError(400, "unsupported content[].type", _INVALID)
