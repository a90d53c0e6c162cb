"""cause_of: what broke a stream the relay did not name, read off the error that ended it."""

from __future__ import annotations

from server_core.errors import ContextError, UpstreamError, internal_error
from server_core.metrics import ENDING_KINDS, cause_of
from server_core.web.drain import shutting_down


def test_a_broken_stream_the_relay_did_not_name() -> None:
    error = UpstreamError("model 'm' did something new", code="upstream_stream_error")
    assert cause_of(error) == "upstream_stream"


def test_an_upstream_error_event_the_drain_and_our_own_bugs() -> None:
    assert cause_of(UpstreamError("model 'm': out of memory", code=500)) == "upstream_error"
    assert cause_of(shutting_down()) == "drain"
    assert cause_of(internal_error(RuntimeError("bug"), "test")) == "internal"
    assert cause_of(ContextError("something else")) == "other"
    assert cause_of(None) == "other"


def test_the_four_ending_kinds() -> None:
    assert ENDING_KINDS == ("complete", "error_event", "http_error", "client_gone")
