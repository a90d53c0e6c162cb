"""Stream endings reached out of the usual order, each still honest and prompt.

Issue 18's survivors: ``when_ended()`` asked after the stream already ended, an upstream
that keeps its body open after ``[DONE]``, and an oversized upstream event that left the
client stream open until the idle timeout.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock

from server_core.sse.forwarded import ForwardedSse
from server_core.sse.upstream_reader import DRAIN_GRACE
from server_core.sse.writer import Ending
from tests.unit.sse.support import Request
from tests.unit.sse.test_forwarded import Response, assert_error_ending, chunk, events, start


class WholeBodyResponse(Response):
    """An upstream whose whole body, ``[DONE]`` and close arrive inside ``deliverBody``."""

    def deliverBody(self, protocol: Any) -> None:
        super().deliverBody(protocol)
        self.send(chunk(0) + b"data: [DONE]\n\n")
        self.end()


def test_a_stream_that_ended_inside_delivery_still_reports_its_ending() -> None:
    # relay() asks when_ended() after deliverBody has already ended the stream.
    request, response, clock = Request(), WholeBodyResponse(), Clock()
    relay = ForwardedSse(request, response, clock=clock, upstream_name="u")  # type: ignore[arg-type]
    endings: list[Ending] = []
    relay.relay().addCallback(endings.append)
    assert endings == [Ending.DONE] and request.finished == 1


def test_an_upstream_keeping_its_body_open_after_done_is_aborted_after_a_grace() -> None:
    request, response, _, clock, endings = start()
    response.send(chunk(0) + b"data: [DONE]\n\n")
    assert endings == [Ending.DONE] and request.finished == 1
    assert not response.transport._producer.aborted  # it may still end by itself
    clock.advance(DRAIN_GRACE)
    assert response.transport._producer.aborted, "the upstream body was left open"
    assert not clock.getDelayedCalls()


def test_an_upstream_closing_after_done_within_the_grace_is_kept() -> None:
    _, response, _, clock, endings = start()
    response.send(b"data: [DONE]\n\n")
    response.end()
    assert not clock.getDelayedCalls()
    clock.advance(DRAIN_GRACE)
    assert endings == [Ending.DONE] and not response.transport._producer.aborted


def test_an_oversized_upstream_event_ends_the_client_stream_at_once() -> None:
    request, response, _, clock, endings = start(idle=300.0)
    response.send(chunk(0))
    response.send(b"data: " + b"x" * ((1 << 20) + 16))  # one line over the decoder's cap
    # At once, not at the idle timeout: no clock time has passed.
    error = assert_error_ending(request, endings, response)
    assert "oversized" in error["message"]
    assert not clock.getDelayedCalls()
    response.send(chunk(1))  # whatever still arrives is dropped
    assert sum(1 for e in events(request) if getattr(e, "data", None)) == 2
    assert json.loads(events(request)[0].data)["choices"][0]["delta"]["content"] == " w0"
