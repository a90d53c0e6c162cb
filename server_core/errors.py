"""Error families -> HTTP status + OpenAI-shaped error body.

Every failure a client can see is a ``ServerCoreError``. Its ``message`` is written
for the client: it says what to fix and never carries a path, a repr or a secret.
Anything else that escapes is turned into ``InternalError`` with an error id that
also appears in the server log.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

__all__ = [
    "AliasNotFound",
    "AuthenticationError",
    "BadRequest",
    "BodyTooLarge",
    "ConfigError",
    "ContextError",
    "ErrorObject",
    "InternalError",
    "NotFound",
    "RouterStateError",
    "ServerCoreError",
    "UpstreamError",
    "error_body",
    "internal_error",
    "normalize_upstream_error",
    "parse_error_object",
]


class ServerCoreError(Exception):
    """Base of every client-visible error."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        if code is not None:
            self.code = code
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})
        # Extra members of the error object (e.g. n_prompt_tokens / n_ctx).
        self.extra: dict[str, Any] = dict(extra or {})

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.code,
                "param": self.param,
                **self.extra,
            }
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict()).encode("utf-8")


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type, "code": code, "param": param}}
    ).encode("utf-8")


# -- client errors -----------------------------------------------------------------


class BadRequest(ServerCoreError):
    status = 400
    type = "invalid_request_error"


class BodyTooLarge(ServerCoreError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class AuthenticationError(ServerCoreError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFound(ServerCoreError):
    status = 404
    type = "not_found_error"


# -- router / context / upstream families (names kept from the seed crate) ---------


class RouterStateError(ServerCoreError):
    """Resolving a model or forwarding a request failed."""


class AliasNotFound(RouterStateError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model}' does not exist. GET /v1/models lists the available models.",
            param="model",
        )
        self.model = model


class ContextError(ServerCoreError):
    """Starting, reaching or keeping a llama-server process failed."""

    status = 503
    type = "unavailable_error"


class UpstreamError(ServerCoreError):
    """The upstream server failed, timed out or answered with an error."""

    status = 502
    type = "upstream_error"


class InternalError(ServerCoreError):
    status = 500
    type = "server_error"
    code = "internal_error"


def internal_error(failure_or_exc: Failure | BaseException, where: str) -> InternalError:
    """Log an unexpected error with a fresh id and return the client-safe error."""
    error_id = uuid.uuid4().hex[:16]
    failure = failure_or_exc if isinstance(failure_or_exc, Failure) else Failure(failure_or_exc)
    log.failure("internal error {error_id} in {where}", failure, error_id=error_id, where=where)
    return InternalError(
        f"The server had an internal error (error id {error_id}). "
        "Retry the request; report the error id if it persists."
    )


class ConfigError(Exception):
    """A configuration file is invalid: says which file, which line and what."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None):
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        super().__init__(f"{where}{message}")
        self.file = file
        self.line = line
        self.detail = message


# -- upstream error bodies ---------------------------------------------------------

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    501: "not_supported_error",
    502: "upstream_error",
    503: "unavailable_error",
    504: "timeout_error",
}

_MAX_UPSTREAM_MESSAGE = 2000
_PHRASES = frozenset(int(s) for s in HTTPStatus)


def _clean_message(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > _MAX_UPSTREAM_MESSAGE:
        text = text[:_MAX_UPSTREAM_MESSAGE] + "..."
    return text


@dataclass(frozen=True, slots=True)
class ErrorObject:
    """The members of an upstream error object worth passing on (None when absent)."""

    message: str | None = None
    type: str | None = None
    code: str | None = None
    param: str | None = None
    # Integer members a client can act on (n_prompt_tokens / n_ctx of a too-long prompt).
    extra: Mapping[str, int] = field(default_factory=dict)


def parse_error_object(payload: object) -> ErrorObject:
    """Read an error payload of llama-server or OpenAI shape, in a body or a stream event.

    ``{"error": {...}}``, ``{"error": "text"}``, a bare error object or a bare string;
    members of the wrong JSON type are ignored.
    """
    err = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(err, str):
        return ErrorObject(message=err)
    if not isinstance(err, dict):
        return ErrorObject()

    def text(key: str) -> str | None:
        value = err.get(key)
        return value if isinstance(value, str) else None

    extra = {key: err[key] for key in ("n_prompt_tokens", "n_ctx") if isinstance(err.get(key), int)}
    return ErrorObject(text("message"), text("type"), text("code"), text("param"), extra)


def normalize_upstream_error(status: int, body: bytes, *, upstream: str) -> ServerCoreError:
    """Turn an upstream non-2xx answer (llama-server, OpenAI, plain text) into our shape.

    4xx keep their status and type (the client's request was wrong, in the upstream's
    words); 5xx become 502, except 501 (the upstream does not implement that: a fact
    about the request, not a broken upstream), 503 (still loading / overloaded) and 504,
    which keep theirs. 401/403 are about
    *our* credentials for the upstream, not the client's: 502, upstream text dropped.
    Bodies that are not an error object (plain text, HTML: tracebacks, dumps) are never
    relayed, whatever the status: the message is the status and its reason phrase.
    """
    if status in (401, 403):
        return UpstreamError(
            f"{upstream} rejected this server's credentials (HTTP {status}); "
            "the server's operator must fix its API key.",
            status=502,
            type="upstream_error",
            code="upstream_auth_failed",
        )
    try:
        parsed = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        parsed = None
    # A JSON body that is not an object (a list, a bare string) carries no error object.
    fields = parse_error_object(parsed) if isinstance(parsed, dict) else ErrorObject()
    message, err_type, code = fields.message, fields.type, fields.code
    if not message:
        # Whatever the status, a body that is no error object (plain text, HTML, a dump)
        # is not relayed: it may hold paths, keys or another tenant's data.
        message = (
            f"HTTP {status} {HTTPStatus(status).phrase}" if status in _PHRASES else f"HTTP {status}"
        )
    if 400 <= status < 500:
        out_status = status
    elif status in (501, 503, 504):
        out_status = status
    else:
        out_status = 502
    if err_type is None:
        err_type = _TYPE_BY_STATUS.get(status, "upstream_error")
    if err_type == "exceed_context_size_error" and code is None:
        code = "context_length_exceeded"
    return UpstreamError(
        f"{upstream}: {_clean_message(message)}",
        status=out_status,
        type=err_type,
        code=code,
        param=fields.param,
        extra=fields.extra,
    )
