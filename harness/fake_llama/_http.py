"""JSON bodies and error objects exactly as llama-server writes them.

Shared by the routes (which return a body) and the jobs (which write one later):
nlohmann-style compact JSON, llama-server's error shape and its JSON parse errors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from twisted.web.server import Request

from harness.fake_llama.generate import RequestError

__all__ = [
    "FINGERPRINT",
    "JSON_CT",
    "dumps",
    "error_body",
    "json_bool",
    "json_response",
    "read_json",
    "start_json",
]

FINGERPRINT = "b0-fakellama"
JSON_CT = b"application/json; charset=utf-8"

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    500: "server_error",
    501: "not_supported_error",
    503: "unavailable_error",
}
STATUS_MESSAGES = {
    400: "Invalid request",
    401: "Invalid API Key",
    403: "Forbidden",
    404: "File Not Found",
    500: "Internal Server Error",
    501: "Not supported",
    503: "Loading model",
}


def dumps(obj: Any) -> str:
    """JSON like nlohmann's ``dump()``: compact, raw UTF-8."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def error_body(status: int, message: str | None = None, type_: str | None = None) -> dict[str, Any]:
    """llama-server's error object for ``status``."""
    if type_ is None:
        type_ = ERROR_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
    if message is None:
        message = STATUS_MESSAGES.get(status, f"HTTP {status}")
    return {"error": {"code": status, "message": message, "type": type_}}


def start_json(request: Request, status: int, data: bytes) -> None:
    """Status and headers of a JSON answer whose body is ``data``."""
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", JSON_CT)
    request.setHeader(b"Content-Length", str(len(data)).encode())


def json_response(request: Request, status: int, obj: Any) -> bytes:
    """Set up a JSON answer and return its body (for a route to return)."""
    data = dumps(obj).encode("utf-8")
    start_json(request, status, data)
    return data


def _json_error_message(raw: bytes, exc: Exception) -> str:
    """A nlohmann-style parse error message (llama-server answers these with 500)."""
    if not raw.strip():
        return (
            "[json.exception.parse_error.101] parse error at line 1, column 1: attempting to "
            "parse an empty input; check that your input string or stream contains the "
            "expected JSON"
        )
    if isinstance(exc, json.JSONDecodeError):
        return (
            f"[json.exception.parse_error.101] parse error at line {exc.lineno}, column "
            f"{exc.colno}: syntax error while parsing value - {exc.msg}"
        )
    return f"[json.exception.parse_error.101] parse error: {exc}"


def read_json(request: Request) -> Any:
    """The request body as JSON; RequestError(500) like llama-server when it is not."""
    raw = request.content.read() if request.content is not None else b""
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(500, _json_error_message(raw, e), "server_error") from None


def json_bool(body: Any, key: str, default: bool = False) -> bool:
    """``body[key]`` when it is a JSON boolean, else ``default``."""
    value = body.get(key, default) if isinstance(body, Mapping) else default
    return value if isinstance(value, bool) else default
