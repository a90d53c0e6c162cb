"""UpstreamClient on a canned Agent: what it sends, its one retry, its errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import RequestTransmissionFailed, ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer
from zope.interface import implementer
from zope.interface.verify import verifyObject

from server_core._twisted_compat import RequestNotSent
from server_core.errors import UpstreamError
from server_core.interfaces import IUpstreamClient
from server_core.upstream import UpstreamClient, UpstreamSettings
from tests.unit.upstream.support import failure_of, result_of

RESPONSE = object()  # stands for the IResponse; the client hands it back untouched


class _Collector:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


@implementer(IAgent)
class ScriptedAgent:
    """Answers each request with the next outcome: a response, an exception or a Deferred."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.sent: list[dict[str, Any]] = []

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> defer.Deferred[Any]:
        body = None
        if bodyProducer is not None:
            collector = _Collector()
            bodyProducer.startProducing(collector)
            body = collector.data
        self.sent.append({"method": method, "uri": uri, "headers": headers, "body": body})
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, defer.Deferred):
            return outcome
        if isinstance(outcome, BaseException):
            return defer.fail(outcome)
        return defer.succeed(outcome)


def client_on(*outcomes: Any) -> tuple[UpstreamClient, ScriptedAgent, Clock]:
    clock = Clock()
    agent = ScriptedAgent(*outcomes)
    return UpstreamClient(clock, UpstreamSettings(header_timeout=7.0), agent=agent), agent, clock


def post(client: UpstreamClient, **kw: Any) -> defer.Deferred[Any]:
    return defer.ensureDeferred(
        client.post_json("http://127.0.0.1:8080/v1/chat", {"q": "é"}, upstream_name="up", **kw)
    )


def header(sent: dict[str, Any], name: bytes) -> list[bytes] | None:
    values: list[bytes] | None = sent["headers"].getRawHeaders(name)
    return values


def closed(*reasons: BaseException) -> ResponseNeverReceived:
    return ResponseNeverReceived([Failure(r) for r in reasons])


def test_the_client_provides_its_interface() -> None:
    assert verifyObject(IUpstreamClient, UpstreamClient(Clock()))
    assert verifyObject(IUpstreamClient, client_on()[0])


def test_post_json_sends_json_with_the_api_key_and_never_the_clients_credentials() -> None:
    client, agent, _ = client_on(RESPONSE)
    incoming = Headers({b"authorization": [b"Bearer client"], b"x-fault": [b"ttft=1ms"]})
    assert result_of(post(client, client_headers=incoming, api_key="sk-up")) is RESPONSE
    [sent] = agent.sent
    assert sent["method"] == b"POST" and sent["uri"] == b"http://127.0.0.1:8080/v1/chat"
    assert json.loads(sent["body"]) == {"q": "é"} and "é".encode() in sent["body"]
    assert header(sent, b"content-type") == [b"application/json"]
    assert header(sent, b"accept") == [b"application/json, text/event-stream"]
    assert header(sent, b"authorization") == [b"Bearer sk-up"]
    # Beside the operator's key, the fake's fault header is no business of the upstream.
    assert header(sent, b"x-fault") is None


def test_the_clients_accept_header_is_kept_and_no_key_sends_no_authorization() -> None:
    client, agent, _ = client_on(RESPONSE)
    result_of(post(client, client_headers=Headers({b"accept": [b"text/event-stream"]})))
    assert header(agent.sent[0], b"accept") == [b"text/event-stream"]
    assert header(agent.sent[0], b"authorization") is None


def test_get_asks_for_json_and_encodes_an_idna_host() -> None:
    client, agent, _ = client_on(RESPONSE)
    d = defer.ensureDeferred(
        client.get("http://bücher.example/v1/models", api_key="k", upstream_name="up")
    )
    assert result_of(d) is RESPONSE
    [sent] = agent.sent
    assert sent["method"] == b"GET" and sent["body"] is None
    assert sent["uri"] == b"http://xn--bcher-kva.example/v1/models"
    assert header(sent, b"accept") == [b"application/json"]
    assert header(sent, b"authorization") == [b"Bearer k"]


@pytest.mark.parametrize(
    "stale",
    [RequestNotSent(), RequestTransmissionFailed([]), closed(ConnectionDone())],
    ids=["not-sent", "not-fully-sent", "clean-close-before-any-byte"],
)
def test_a_stale_keepalive_connection_is_retried_once(stale: BaseException) -> None:
    client, agent, _ = client_on(stale, RESPONSE)
    assert result_of(post(client)) is RESPONSE
    assert len(agent.sent) == 2 and agent.sent[0]["body"] == agent.sent[1]["body"]


def test_a_second_unsent_request_is_not_retried_again() -> None:
    client, agent, _ = client_on(RequestNotSent(), RequestNotSent(), RESPONSE)
    error = failure_of(post(client))
    assert isinstance(error, UpstreamError) and len(agent.sent) == 2
    assert str(error) == "up: the connection closed before the request was sent"


def test_a_reset_before_the_response_is_not_retried() -> None:
    client, agent, _ = client_on(closed(ConnectionLost()), RESPONSE)
    error = failure_of(post(client))
    assert isinstance(error, UpstreamError) and error.status == 502
    assert str(error) == "up: the connection closed before a response arrived"
    assert len(agent.sent) == 1


def test_no_response_headers_in_time_is_a_504() -> None:
    client, _, clock = client_on(defer.Deferred())
    d = post(client)
    clock.advance(6.9)
    assert not d.called
    clock.advance(0.1)
    error = failure_of(d)
    assert isinstance(error, UpstreamError) and error.status == 504
    assert error.type == "timeout_error"
    assert str(error) == "up: no response headers within 7 s"


def test_a_refused_connection_says_so() -> None:
    client, _, _ = client_on(ConnectionRefusedError())
    error = failure_of(post(client))
    assert isinstance(error, UpstreamError) and error.status == 502
    assert "connection refused" in str(error)


def test_our_own_cancel_stays_a_cancel() -> None:
    cancelled: list[object] = []
    client, _, _ = client_on(defer.Deferred(cancelled.append))
    d = post(client)
    d.cancel()
    assert isinstance(failure_of(d), defer.CancelledError)
    assert len(cancelled) == 1  # the request itself was cancelled, not just abandoned


def test_a_cancel_wrapped_by_agent_stays_a_cancel() -> None:
    client, _, _ = client_on(closed(defer.CancelledError()))
    assert isinstance(failure_of(post(client)), defer.CancelledError)


def test_close_closes_the_pool() -> None:
    client, _, _ = client_on()
    assert result_of(client.close()) is None
