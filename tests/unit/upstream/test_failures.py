"""Agent failures as the UpstreamError a client sees: message, status, type."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.error import (
    ConnectError,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError,
)
from twisted.python.failure import Failure
from twisted.web.client import RequestTransmissionFailed, ResponseNeverReceived

from server_core._twisted_compat import RequestNotSent
from server_core.upstream import UpstreamSettings
from server_core.upstream._failures import as_upstream_error, failure_reasons

SETTINGS = UpstreamSettings(connect_timeout=3.0, header_timeout=45.0)


def wrapped(exc: BaseException) -> ResponseNeverReceived:
    return ResponseNeverReceived([Failure(exc)])


@pytest.mark.parametrize(
    ("exc", "message", "status", "kind"),
    [
        (RequestNotSent(), "the connection closed before the request was sent", 502, None),
        (
            RequestTransmissionFailed([Failure(ConnectionLost())]),
            "the connection closed before the request was sent",
            502,
            None,
        ),
        (
            ConnectionRefusedError(),
            "connection refused (is the upstream server running?)",
            502,
            None,
        ),
        (DNSLookupError(), "host name could not be resolved", 502, None),
        (TimeoutError(), "could not connect within 3 s", 504, "timeout_error"),
        (ConnectError(), "could not connect", 502, None),
        (defer.TimeoutError(), "no response headers within 45 s", 504, "timeout_error"),
        (wrapped(defer.TimeoutError()), "no response headers within 45 s", 504, "timeout_error"),
        (
            wrapped(ConnectionLost()),
            "the connection closed before a response arrived",
            502,
            None,
        ),
        (ValueError("x"), "request failed (ValueError)", 502, None),
    ],
)
def test_each_failure_has_its_message(
    exc: BaseException, message: str, status: int, kind: str | None
) -> None:
    error = as_upstream_error(exc, "model 'm'", SETTINGS)
    assert str(error) == f"model 'm': {message}"
    assert error.status == status
    assert error.type == (kind or "upstream_error")


def test_failure_reasons_are_the_exception_then_what_agent_wrapped() -> None:
    inner = ConnectionLost()
    outer = ResponseNeverReceived([Failure(inner), "not a failure"])
    assert list(failure_reasons(outer)) == [outer, inner]
    plain = ValueError()
    assert list(failure_reasons(plain)) == [plain]
