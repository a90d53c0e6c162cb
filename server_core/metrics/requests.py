"""One record per HTTP request, from its first byte in to its end, and the resource
that keeps them.

``RecordingResource`` sits in front of every route: it stamps the request with a
``RequestRecord`` and, when the request has finished (or the client has gone), hands the
record to a ``RequestSink`` (``ServerMetrics``). The reply code fills in what only it
knows, through ``record_of(request)``: the model and alias that served it, and how a
stream ended. Everything here is O(1) per request: a few attribute writes, one
``notifyFinish`` callback, and a ``write`` wrapper that unwraps itself at the first event.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.server import Request

from server_core.metrics.outcome import CLIENT_GONE, COMPLETE, ERROR_EVENT, HTTP_ERROR
from server_core.metrics.tokens import GapCounts, TokenCounts

__all__ = ["RecordingResource", "RequestRecord", "RequestSink", "RouteLabels", "record_of"]

_ATTRIBUTE = "server_core_record"
# Frames that are not an answer's first event: keep-alive comments, Anthropic's ping.
_NOT_AN_EVENT = (b":", b"event: ping")


class RequestRecord:
    """What is known of one request: route, model, alias, timings and ending."""

    __slots__ = (
        "alias",
        "cause",
        "ending",
        "first_event",
        "gaps",
        "method",
        "model",
        "model_route",
        "node",
        "route",
        "started",
        "status",
        "stream",
        "tokens",
    )

    def __init__(self, route: str, method: str, started: float, node: str) -> None:
        self.route = route
        self.method = method
        self.started = started
        self.node = node
        self.model: str | None = None
        self.model_route = False
        """A route that asks a model: its ending counts even when it failed before any
        model answered (then with an empty model)."""
        self.alias: str | None = None
        self.first_event: float | None = None
        self.stream = False
        self.ending: str | None = None
        self.cause = ""
        self.status = 0
        self.tokens: TokenCounts | None = None
        self.gaps: GapCounts | None = None

    def usage(self, payload: dict[str, Any]) -> None:
        """An answer or event that may carry token counts (``tokens.TokenCounts``)."""
        if self.tokens is None:
            self.tokens = TokenCounts()
        self.tokens.note(payload)

    def event_at(self, now: float) -> None:
        """A stream's event was relayed at ``now`` (for the inter-event gaps)."""
        if self.gaps is None:
            self.gaps = GapCounts()
        self.gaps.event_at(now)

    def served(self, model: str | None, alias: str | None) -> None:
        """The reply came from ``alias``'s server, for the client's ``model``."""
        self.model = model
        self.alias = alias

    @property
    def served_by(self) -> bytes:
        """The ``X-Served-By`` value: ``NODE/ALIAS``."""
        return f"{self.node}/{self.alias or ''}".encode()

    def error_event(self, cause: str) -> None:
        """A stream is being ended with one error event, for ``cause`` (``outcome``).

        Only the first ending counts: a stream already complete or left by its client
        ignores a later attempt to end it, and so does its record.
        """
        if self.ending is None:
            self.ending = ERROR_EVENT
            self.cause = cause

    def upstream_refused(self) -> None:
        """The upstream answered with an error status (relayed as our error)."""
        self.ending = HTTP_ERROR
        self.cause = "upstream_status"

    def finished(self, status: int, gone: bool) -> None:
        """The response has ended: its status, and whether the client left first."""
        self.status = status
        if self.ending is None:
            if gone:
                self.ending = CLIENT_GONE
            elif status >= 400:
                self.ending = HTTP_ERROR
            else:
                self.ending = COMPLETE


def record_of(request: Any) -> RequestRecord | None:
    """The record of ``request``, or None when nothing records (tests, no metrics)."""
    return getattr(request, _ATTRIBUTE, None)


class RequestSink(Protocol):
    """Receives each request as it starts and when it has ended."""

    def request_started(self, record: RequestRecord) -> None: ...

    def request_finished(self, record: RequestRecord) -> None: ...


class RouteLabels:
    """The route label of a path: the route's rule (``/v1/models/<path:model_id>``), or
    ``other``, so a scan of random paths cannot grow the metrics without bound."""

    def __init__(self, rules: Iterable[str], model_rules: Iterable[str] = ()) -> None:
        self.model_rules = frozenset(model_rules)
        self._static: set[str] = set()
        self._prefixes: list[tuple[str, str]] = []
        for rule in rules:
            if "<" in rule:
                self._prefixes.append((rule.split("<", 1)[0], rule))
            else:
                self._static.add(rule)
        self._prefixes.sort(key=lambda pair: -len(pair[0]))

    def __call__(self, path: str) -> str:
        if path in self._static:
            return path
        for prefix, rule in self._prefixes:
            if path.startswith(prefix):
                return rule
        return "other"


class RecordingResource(Resource):
    """Records every request that passes through to ``resource`` (see module doc)."""

    isLeaf = True

    def __init__(
        self,
        resource: IResource,
        sink: RequestSink,
        *,
        clock: IReactorTime,
        routes: RouteLabels,
        node_name: str,
    ) -> None:
        super().__init__()
        self._resource = resource
        self._sink = sink
        self._clock = clock
        self._routes = routes
        self._node = node_name

    def render(self, request: Request) -> Any:
        record = RequestRecord(
            self._routes(request.path.decode("utf-8", "replace")),
            request.method.decode("ascii", "replace"),
            self._clock.seconds(),
            self._node,
        )
        record.model_route = record.route in self._routes.model_rules
        setattr(request, _ATTRIBUTE, record)
        self._watch_first_event(request, record)
        sink = self._sink

        def ended(gone: bool) -> None:
            record.finished(request.code, gone)
            sink.request_finished(record)

        finish = request.notifyFinish()
        finish.addCallbacks(lambda _: ended(False), lambda _: ended(True))
        sink.request_started(record)
        # The rest of the traversal, as Site.getResourceFor would have done it.
        return getChildForRequest(self._resource, request).render(request)

    def _watch_first_event(self, request: Request, record: RequestRecord) -> None:
        """Time the first frame that is an event, then get out of the way."""
        write = request.write
        clock = self._clock

        def first_write(data: bytes) -> None:
            if data and not data.startswith(_NOT_AN_EVENT):
                record.first_event = clock.seconds()
                del request.write  # back to the class's own method: no cost from here on
            write(data)

        request.write = first_write  # type: ignore[method-assign]
