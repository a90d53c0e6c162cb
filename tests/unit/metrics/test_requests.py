"""RecordingResource and RequestRecord: one record per request, finished exactly once."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from server_core.metrics import RecordingResource, RequestRecord, RouteLabels, record_of

RULES = ["/v1/chat/completions", "/v1/models", "/v1/models/<path:model_id>", "/logs/<string:a>"]


class Sink:
    def __init__(self) -> None:
        self.started: list[RequestRecord] = []
        self.finished: list[RequestRecord] = []

    def request_started(self, record: RequestRecord) -> None:
        self.started.append(record)

    def request_finished(self, record: RequestRecord) -> None:
        self.finished.append(record)


class Leaf(Resource):
    isLeaf = True

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.seen: list[Any] = []

    def render(self, request: Any) -> Any:
        self.seen.append(request)
        return NOT_DONE_YET


def setup() -> tuple[RecordingResource, Leaf, Sink, Clock]:
    clock, sink = Clock(), Sink()
    leaf = Leaf(clock)
    resource = RecordingResource(
        leaf, sink, clock=clock, routes=RouteLabels(RULES), node_name="node1"
    )
    return resource, leaf, sink, clock


class Request(DummyRequest):
    """DummyRequest with ``code``, as twisted.web's Request has it."""

    code = 200

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        super().setResponseCode(code, message)
        self.code = code


def request(path: bytes) -> Request:
    req = Request([])
    req.path = path
    req.uri = path
    req.method = b"POST"
    return req


def test_route_labels_are_the_rules_or_other() -> None:
    labels = RouteLabels(RULES)
    assert labels("/v1/models") == "/v1/models"
    assert labels("/v1/models/a/b") == "/v1/models/<path:model_id>"
    assert labels("/logs/x") == "/logs/<string:a>"
    assert labels("/v1/chat/completions") == "/v1/chat/completions"
    assert labels("/random/../scan") == "other"
    assert labels("/v1/modelsX") == "other"


def test_a_request_is_recorded_from_start_to_finish() -> None:
    resource, leaf, sink, clock = setup()
    req = request(b"/v1/chat/completions")
    resource.render(req)
    (record,) = sink.started
    assert leaf.seen == [req] and record_of(req) is record
    assert (record.route, record.method, record.node) == ("/v1/chat/completions", "POST", "node1")
    assert sink.finished == []
    record.served("fake", "fake")
    record.stream = True
    clock.advance(0.5)
    req.write(b"")  # the headers' flush is no event
    req.write(b": keep-alive\n\n")
    req.write(b"event: ping\ndata: {}\n\n")
    assert record.first_event is None
    clock.advance(0.25)
    req.write(b'data: {"x":1}\n\n')
    assert record.first_event == 0.75
    clock.advance(1)
    req.write(b'data: {"x":2}\n\n')
    assert record.first_event == 0.75  # only the first counts
    assert req.written[-1] == b'data: {"x":2}\n\n'  # every write still goes through
    req.finish()
    assert sink.finished == [record]
    assert (record.status, record.ending, record.served_by) == (200, "complete", b"node1/fake")


def test_an_error_status_is_an_http_error_and_a_client_that_left_is_client_gone() -> None:
    resource, _, sink, _ = setup()
    refused = request(b"/v1/chat/completions")
    resource.render(refused)
    refused.setResponseCode(429)
    refused.finish()
    left = request(b"/v1/chat/completions")
    resource.render(left)
    left.processingFailed(Failure(ConnectionError("gone")))
    assert [r.ending for r in sink.finished] == ["http_error", "client_gone"]


def test_the_first_error_event_is_the_ending_and_nothing_after_it_changes_that() -> None:
    resource, _, sink, _ = setup()
    req = request(b"/v1/chat/completions")
    resource.render(req)
    record = sink.started[0]
    record.error_event("stall")
    record.error_event("drain")  # the drain came too late: the stream had ended
    req.finish()
    assert (record.ending, record.cause) == ("error_event", "stall")
    done = RequestRecord("/r", "POST", 0.0, "n")
    done.finished(200, gone=False)
    done.error_event("drain")
    assert (done.ending, done.cause) == ("complete", "")


def test_an_upstream_error_status_is_an_http_error_with_its_cause() -> None:
    record = RequestRecord("/r", "POST", 0.0, "n")
    record.upstream_refused()
    record.finished(502, gone=False)
    assert (record.ending, record.cause) == ("http_error", "upstream_status")


def test_routes_that_ask_a_model_are_marked() -> None:
    clock, sink = Clock(), Sink()
    labels = RouteLabels(RULES, ["/v1/chat/completions"])
    resource = RecordingResource(Leaf(clock), sink, clock=clock, routes=labels, node_name="n")
    resource.render(request(b"/v1/chat/completions"))
    resource.render(request(b"/v1/models"))
    assert [r.model_route for r in sink.started] == [True, False]
