"""What went wrong with a request sent upstream, as the ``UpstreamError`` a client sees.

Agent reports most failures wrapped: ``ResponseNeverReceived`` and the request
failures carry the underlying ``Failure`` objects in ``reasons``, so the mapping
looks at the exception and at every reason under it.
"""

from __future__ import annotations

from collections.abc import Iterator

from twisted.internet import defer
from twisted.internet.error import (
    ConnectError,
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError,
)
from twisted.web.client import RequestTransmissionFailed, ResponseNeverReceived

from server_core._twisted_compat import RequestNotSent
from server_core.config.settings import UpstreamSettings
from server_core.errors import UpstreamError
from server_core.upstream._head_limit import ResponseHeadTooLarge

__all__ = ["as_upstream_error", "failure_reasons"]


def failure_reasons(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` itself, then the exceptions in the ``reasons`` Agent wrapped into it."""
    yield exc
    for reason in getattr(exc, "reasons", None) or []:
        value = getattr(reason, "value", None)
        if isinstance(value, BaseException):
            yield value


def _any(reasons: list[BaseException], kind: type[BaseException]) -> bool:
    """Whether one of ``reasons`` is a ``kind``."""
    return any(isinstance(r, kind) for r in reasons)


def as_upstream_error(
    exc: BaseException, upstream_name: str, settings: UpstreamSettings
) -> UpstreamError:
    """The client-facing error for a request that failed before its response headers."""
    if isinstance(exc, RequestNotSent | RequestTransmissionFailed):
        return UpstreamError(f"{upstream_name}: the connection closed before the request was sent")
    reasons = list(failure_reasons(exc))
    for reason in reasons:
        if isinstance(reason, ResponseHeadTooLarge):
            return UpstreamError(f"{upstream_name}: {reason}", status=502)
    if _any(reasons, ConnectionRefusedError):
        return UpstreamError(
            f"{upstream_name}: connection refused (is the upstream server running?)", status=502
        )
    if _any(reasons, DNSLookupError):
        return UpstreamError(f"{upstream_name}: host name could not be resolved", status=502)
    if _any(reasons, TimeoutError):
        return UpstreamError(
            f"{upstream_name}: could not connect within {settings.connect_timeout:g} s",
            status=504,
            type="timeout_error",
        )
    if _any(reasons, ConnectError):
        return UpstreamError(f"{upstream_name}: could not connect", status=502)
    if _any(reasons, defer.TimeoutError):
        return UpstreamError(
            f"{upstream_name}: no response headers within {settings.header_timeout:g} s",
            status=504,
            type="timeout_error",
        )
    if isinstance(exc, ResponseNeverReceived):
        return UpstreamError(
            f"{upstream_name}: the connection closed before a response arrived", status=502
        )
    return UpstreamError(f"{upstream_name}: request failed ({type(exc).__name__})", status=502)
