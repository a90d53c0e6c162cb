"""Request body validation: every message names the field and says what to fix.

Only the fields server_core relies on (or that would make an upstream fail in an
unhelpful way) are checked; unknown fields pass through to the upstream, and so do
values llama-server judges itself (an embeddings ``input`` of token ids, say): its own
4xx reaches the client with its status and type. ``model`` may be omitted: the router
then uses the default model, or answers ``missing_model()`` when there is none.

Parsing is bounded before it starts. Python's parser costs about 60 bytes and a
microsecond per JSON value, so a body of ``[],[],...`` at the 10 MiB cap used to take
over 200 MiB and seconds of event-loop time. ``MAX_JSON_VALUES`` bounds the count of
values; counting them costs a few ``bytes.count`` passes (milliseconds at the cap), and
only a body whose raw count is over the limit pays for a second, exact count with its
strings blanked out, so brackets and commas inside a prompt never count. Nesting needs
no scan of its own: the parser stops at the interpreter's recursion limit.
``scripts/bench_json_bounds.py`` measures the cost at the cap.
"""

from __future__ import annotations

import json
import math
from typing import Any

from server_core.errors import BadRequest

__all__ = [
    "MAX_JSON_VALUES",
    "missing_model",
    "parse_json_body",
    "validate_chat",
    "validate_completion",
    "validate_embeddings",
    "validate_messages",
    "validate_native",
    "validate_responses",
]

# Arrays, objects, keys, strings, numbers and literals in one body. A long conversation
# or a tool schema uses thousands; at this limit the parse of a body at the 10 MiB cap
# stays within about 2x the body in memory (see the module doc).
MAX_JSON_VALUES = 100_000


# Every byte but the four that can precede a value: ``translate`` drops them in one pass.
_NOT_BEFORE_A_VALUE = bytes(c for c in range(256) if c not in b",:[{")


def _value_bound(raw: bytes) -> int:
    """An upper bound on the values of ``raw`` outside strings: each one but the root
    follows a ``,``, a ``:`` or the opening of its container."""
    return len(raw.translate(None, _NOT_BEFORE_A_VALUE)) + 1


def _check_structure(raw: bytes) -> None:
    """``BadRequest`` naming the limit when ``raw`` holds more than ``MAX_JSON_VALUES``."""
    # Each value takes a byte at least, and separators inside strings count here too:
    # a false alarm only costs the exact count below.
    if len(raw) <= MAX_JSON_VALUES or _value_bound(raw) <= MAX_JSON_VALUES:
        return
    if b'"' in raw:
        # Without escaped backslashes and quotes, each quote left opens or closes a string.
        # (Each replace copies the body: skipped when there is nothing to replace.)
        if b"\\\\" in raw:
            raw = raw.replace(b"\\\\", b"")
        if b'\\"' in raw:
            raw = raw.replace(b'\\"', b"")
        # Every string is a value: too many quotes settle it, and bound the split below.
        strings = raw.count(b'"') // 2
        if strings <= MAX_JSON_VALUES and (
            _value_bound(b"".join(raw.split(b'"')[::2])) <= MAX_JSON_VALUES
        ):
            return
    raise BadRequest(
        f"The request body has more than {MAX_JSON_VALUES} JSON values (arrays, objects, "
        "keys, strings, numbers); send fewer.",
        code="json_too_complex",
    )


def _no_constants(name: str) -> Any:
    # Python's json accepts NaN / Infinity; JSON (and llama-server's parser) does not.
    raise ValueError(f"{name} is not valid JSON")


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object that can be sent on as valid JSON, or ``BadRequest``."""
    if not raw or raw.isspace():  # (strip() would copy a 10 MiB body)
        raise BadRequest("The request body is empty; send a JSON object.")
    _check_structure(raw)
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise BadRequest("The request body is not valid UTF-8.") from None
    except RecursionError:
        raise BadRequest(
            "The request body is nested too deeply (the limit is several hundred levels).",
            code="json_too_deep",
        ) from None
    except ValueError as exc:
        raise BadRequest(f"The request body is not valid JSON ({_json_reason(exc)}).") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    if b"\\u" in raw:
        # A \uD800-style escape yields a lone surrogate that cannot be encoded again.
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(
                "The request body contains an unpaired UTF-16 surrogate escape (\\uD800-\\uDFFF)."
            ) from None
    return body


def _json_reason(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    return "could not be parsed"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _shown(value: int | float) -> str:
    text = str(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _bad(param: str, message: str) -> BadRequest:
    return BadRequest(message, param=param, code="invalid_value")


def missing_model() -> BadRequest:
    """The 400 for a request that names no model when no default model is configured."""
    return BadRequest(
        "Missing required parameter: 'model' (this server has no default model).",
        param="model",
        code="missing",
    )


def _optional_model(body: dict[str, Any]) -> None:
    model = body.get("model")
    if model is None:
        return  # the default model, if there is one (router_state decides)
    if not isinstance(model, str) or not model.strip():
        raise _bad("model", f"'model' must be a non-empty string, got {_type_name(model)}.")


def _optional_bool(body: dict[str, Any], name: str) -> None:
    if name in body and body[name] is not None and not isinstance(body[name], bool):
        raise _bad(name, f"'{name}' must be a boolean, got {_type_name(body[name])}.")


def _optional_int(body: dict[str, Any], name: str, minimum: int) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(name, f"'{name}' must be an integer, got {_type_name(value)}.")
    if value < minimum:
        raise _bad(name, f"'{name}' must be >= {minimum}, got {_shown(value)}.")


def _optional_number(body: dict[str, Any], name: str, lo: float, hi: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(name, f"'{name}' must be a number, got {_type_name(value)}.")
    if isinstance(value, float) and not math.isfinite(value):
        raise _bad(name, f"'{name}' must be a finite number.")
    if not lo <= value <= hi:
        raise _bad(name, f"'{name}' must be between {lo:g} and {hi:g}, got {_shown(value)}.")


def _common(body: dict[str, Any]) -> None:
    _optional_model(body)
    _optional_bool(body, "stream")
    _optional_int(body, "max_tokens", 1)
    _optional_int(body, "max_completion_tokens", 1)
    _optional_int(body, "n", 1)
    _optional_int(body, "seed", -(2**63))
    _optional_number(body, "temperature", 0.0, 2.0)
    _optional_number(body, "top_p", 0.0, 1.0)
    _optional_number(body, "presence_penalty", -2.0, 2.0)
    _optional_number(body, "frequency_penalty", -2.0, 2.0)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _bad("stop", "'stop' must be a string or an array of strings.")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise _bad("stream_options", "'stream_options' must be an object.")
        if not body.get("stream"):
            raise _bad("stream_options", "'stream_options' is only allowed when 'stream' is true.")
        if "include_usage" in options and not isinstance(options["include_usage"], bool):
            raise _bad(
                "stream_options.include_usage", "'stream_options.include_usage' must be a boolean."
            )


def validate_chat(body: dict[str, Any]) -> None:
    _common(body)
    messages = body.get("messages")
    if messages is None:
        raise BadRequest(
            "Missing required parameter: 'messages'.", param="messages", code="missing"
        )
    if not isinstance(messages, list):
        raise _bad("messages", f"'messages' must be an array, got {_type_name(messages)}.")
    if not messages:
        raise _bad("messages", "'messages' must contain at least one message.")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad(where, f"'{where}' must be an object, got {_type_name(message)}.")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise _bad(f"{where}.role", f"'{where}.role' must be a non-empty string.")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _bad(
                f"{where}.content",
                f"'{where}.content' must be a string or an array, got {_type_name(content)}.",
            )


def validate_completion(body: dict[str, Any]) -> None:
    _common(body)
    prompt = body.get("prompt")
    if prompt is None:
        raise BadRequest("Missing required parameter: 'prompt'.", param="prompt", code="missing")
    if not isinstance(prompt, str | list):
        raise _bad("prompt", f"'prompt' must be a string or an array, got {_type_name(prompt)}.")


def validate_embeddings(body: dict[str, Any]) -> None:
    """``model`` and that there is something to embed; its form is llama-server's to judge
    (strings, token ids, arrays of either, multimodal objects, or its own ``content``)."""
    _optional_model(body)
    if body.get("input") is None and body.get("content") is None:
        raise BadRequest("Missing required parameter: 'input'.", param="input", code="missing")


def validate_native(body: dict[str, Any]) -> None:
    """A llama-server native route: only what server_core decides on (model, stream)."""
    _optional_model(body)
    _optional_bool(body, "stream")


def validate_responses(body: dict[str, Any]) -> None:
    """The OpenAI Responses API: ``input`` and the types server_core relies on."""
    _optional_model(body)
    _optional_bool(body, "stream")
    _optional_int(body, "max_output_tokens", 1)
    _optional_number(body, "temperature", 0.0, 2.0)
    _optional_number(body, "top_p", 0.0, 1.0)
    given = body.get("input")
    if given is None:
        raise BadRequest("Missing required parameter: 'input'.", param="input", code="missing")
    if not isinstance(given, str | list):
        raise _bad("input", f"'input' must be a string or an array, got {_type_name(given)}.")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _bad("instructions", "'instructions' must be a string.")


def validate_messages(body: dict[str, Any]) -> None:
    """The Anthropic Messages API: ``messages`` and the types server_core relies on."""
    _optional_model(body)
    _optional_bool(body, "stream")
    _optional_int(body, "max_tokens", 1)
    _optional_int(body, "top_k", 0)
    _optional_number(body, "temperature", 0.0, 2.0)
    _optional_number(body, "top_p", 0.0, 1.0)
    messages = body.get("messages")
    if messages is None:
        raise BadRequest(
            "Missing required parameter: 'messages'.", param="messages", code="missing"
        )
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "'messages' must be a non-empty array of messages.")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            where = f"messages[{i}]"
            raise _bad(where, f"'{where}' must be an object whose role is user or assistant.")
    stops = body.get("stop_sequences")
    if stops is not None and (
        not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)
    ):
        raise _bad("stop_sequences", "'stop_sequences' must be an array of strings.")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise _bad("system", "'system' must be a string or an array of content blocks.")
