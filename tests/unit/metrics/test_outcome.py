"""cause_of: what broke a stream, read off the error that ended it."""

from __future__ import annotations

import pytest

from server_core.errors import ContextError, UpstreamError, internal_error
from server_core.metrics import ENDING_KINDS, cause_of
from server_core.web.drain import shutting_down


def relay_failure(what: str) -> UpstreamError:
    """The error ForwardedSse._fail builds (its messages are pinned here)."""
    return UpstreamError(f"model 'm' {what}", code="upstream_stream_error")


@pytest.mark.parametrize(
    ("what", "cause"),
    [
        ("connection lost in the middle of the stream", "upstream_reset"),
        ("closed the stream before it was complete", "upstream_closed"),
        ("sent no data for 300 s", "stall"),
        ("sent a malformed event (invalid JSON)", "malformed"),
        ("sent an oversized SSE event", "malformed"),
        ("did something new", "upstream_stream"),
    ],
)
def test_the_relay_verdicts(what: str, cause: str) -> None:
    assert cause_of(relay_failure(what)) == cause


def test_the_relay_messages_are_the_ones_forwarded_sse_sends() -> None:
    import inspect

    from server_core.sse import forwarded

    source = inspect.getsource(forwarded)
    for fragment in (
        "connection lost in the middle of the stream",
        "closed the stream before it was complete",
        "sent no data for",
        "malformed event",
        "oversized SSE event",
    ):
        assert fragment in source, f"ForwardedSse no longer says {fragment!r}"


def test_an_upstream_error_event_the_drain_and_our_own_bugs() -> None:
    assert cause_of(UpstreamError("model 'm': out of memory", code=500)) == "upstream_error"
    assert cause_of(shutting_down()) == "drain"
    assert cause_of(internal_error(RuntimeError("bug"), "test")) == "internal"
    assert cause_of(ContextError("something else")) == "other"
    assert cause_of(None) == "other"


def test_the_four_ending_kinds() -> None:
    assert ENDING_KINDS == ("complete", "error_event", "http_error", "client_gone")
