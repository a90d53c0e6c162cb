"""``ServerMetrics``: every Prometheus metric of server_core, and the text a scrape gets.

The metrics live in a registry of their own (one per server, so tests can build many).
Request metrics are recorded when a request ends (``RequestSink``), model metrics when
the shared context reports a change (``StateSink``, through ``ModelStatus``), and the
gauges that describe *now* (requests in flight and queued per alias, each alias's state)
are read at scrape time from the context's own rows, so they cost a request nothing and
can never drift. Label children are cached: recording is a dict lookup and an ``inc``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.utils import floatToGoString

from server_core.metrics.events import EventBus, Subscription
from server_core.metrics.queues import QueueWatch
from server_core.metrics.requests import RequestRecord
from server_core.metrics.state import STATES, ModelStatus
from server_core.metrics.tokens import GAP_BUCKETS, GapCounts

__all__ = ["CONTENT_TYPE", "ServerMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
# First events come in tens of ms (a loaded model) to minutes (a start first).
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_START = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
_WAIT = (0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

Rows = Callable[[], list[dict[str, Any]]]
RequestLog = Callable[[RequestRecord, float, float | None], None]


def _histogram(
    registry: CollectorRegistry,
    name: str,
    text: str,
    label: str,
    buckets: tuple[float, ...] = _LATENCY_BUCKETS,
) -> _Labelled:
    metric = Histogram(
        f"server_core_{name}_seconds", text, [label], buckets=buckets, registry=registry
    )
    return _Labelled(metric)


class _Labelled:
    """A metric's children by label values, looked up once each."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


def _model_counters(registry: CollectorRegistry) -> dict[str, _Labelled]:
    """The per-alias lifecycle counters: starts, crashes, start failures, swaps."""
    return {
        name: _Labelled(Counter(f"server_core_model_{name}", text, ["alias"], registry=registry))
        for name, text in (
            ("starts", "Managed llama-server processes spawned."),
            ("crashes", "Ready servers that died or were killed as hung."),
            ("start_failures", "Starts that never became ready."),
            ("swaps", "Servers stopped to make room for another model."),
        )
    }


class ServerMetrics:
    """The metrics (see module doc); also where request and model events are published."""

    def __init__(
        self,
        clock: Any,
        *,
        bus: EventBus | None = None,
        request_log: RequestLog | None = None,
    ) -> None:
        self._clock = clock
        self.bus = bus if bus is not None else EventBus()
        self._request_log = request_log
        self.registry = CollectorRegistry()
        self._rows: Rows | None = None
        self._status: ModelStatus | None = None
        self._queues: QueueWatch | None = None
        r = self.registry
        self._requests = _Labelled(
            Counter(
                "server_core_requests",
                "HTTP requests by route, model and status.",
                ["route", "model", "status"],
                registry=r,
            )
        )
        self._endings = _Labelled(
            Counter(
                "server_core_endings",
                "How each model request ended: complete, error_event, http_error or "
                "client_gone, and for error events what broke the stream.",
                ["model", "stream", "kind", "cause"],
                registry=r,
            )
        )
        self._ttft = _histogram(
            r, "time_to_first_event", "From request to a stream's first event.", "model"
        )
        self._duration = _histogram(
            r, "request_duration", "From request to the end of its response.", "model"
        )
        self._wait = _histogram(
            r, "queue_wait", "From request to its lease on a managed server.", "alias", _WAIT
        )
        self._start = _histogram(
            r, "model_start", "From spawn to ready of a managed server.", "alias", _START
        )
        self._counters = _model_counters(r)
        self._tokens = _Labelled(
            Counter(
                "server_core_tokens",
                "Tokens by model: prompt (in) and generated (out), as the upstream reported.",
                ["model", "direction"],
                registry=r,
            )
        )
        # Inter-event gaps are counted per request and merged here; a collector shows them.
        self._gaps: dict[str, GapCounts] = {}
        self._open = 0  # a plain int per request; the gauge reads it at scrape time
        in_flight = Gauge("server_core_http_in_flight", "HTTP requests being answered.", registry=r)
        in_flight.set_function(lambda: self._open)
        r.register(_NowCollector(self))

    def watch(self, status: ModelStatus, rows: Rows) -> None:
        """Read each alias's status and the context's ``running()`` rows at scrape time,
        and the queue from those rows while someone listens to the events."""
        self._status = status
        self._rows = rows
        self._queues = QueueWatch(self.bus, rows, self._clock)

    def subscribe(self) -> Subscription:
        """A reader of the live events (``/api/events``)."""
        if self._queues is not None:
            return self._queues.subscribe()
        return self.bus.subscribe()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    # -- RequestSink -------------------------------------------------------------------

    def request_started(self, record: RequestRecord) -> None:
        self._open += 1
        if self.bus:
            self.bus.publish({"type": "request_start", "route": record.route})

    def request_finished(self, record: RequestRecord) -> None:
        self._open -= 1
        model = record.model or ""
        self._requests(record.route, model, str(record.status)).inc()
        if record.model is None and not record.model_route:
            return  # not a model's request: counted above by route and status only
        duration = self._clock.seconds() - record.started
        ttft = None
        if record.model is not None:
            if record.stream and record.first_event is not None:
                ttft = record.first_event - record.started
                self._ttft(model).observe(ttft)
            self._duration(model).observe(duration)
            self._counted(model, record)
        kind = record.ending or ""
        self._endings(model, "true" if record.stream else "false", kind, record.cause).inc()
        if self.bus:
            self.bus.publish(_end_event(record, duration, ttft))
        if self._request_log is not None:
            self._request_log(record, duration, ttft)

    def _counted(self, model: str, record: RequestRecord) -> None:
        tokens, gaps = record.tokens, record.gaps
        if tokens is not None:
            if tokens.prompt:
                self._tokens(model, "in").inc(tokens.prompt)
            if tokens.generated:
                self._tokens(model, "out").inc(tokens.generated)
        if gaps is not None and gaps.observed:
            merged = self._gaps.get(model)
            if merged is None:
                merged = self._gaps[model] = GapCounts()
            merged.merge(gaps)

    # -- StateSink -----------------------------------------------------------------------

    def model_started(self, alias: str) -> None:
        self._counters["starts"](alias).inc()

    def model_ready(self, alias: str, seconds: float) -> None:
        self._start(alias).observe(seconds)

    def model_failed(self, alias: str, *, crashed: bool) -> None:
        self._counters["crashes" if crashed else "start_failures"](alias).inc()

    def model_swapped_out(self, alias: str) -> None:
        self._counters["swaps"](alias).inc()

    def queue_wait(self, alias: str, seconds: float) -> None:
        self._wait(alias).observe(max(0.0, seconds))

    def publish(self, event: dict[str, Any]) -> None:
        if self.bus:
            self.bus.publish(event)

    # -- scrape time -------------------------------------------------------------------

    def now_metrics(self) -> Iterator[Metric]:
        """Gauges of the moment: per alias in flight, queued, and state (one-hot)."""
        rows = self._rows() if self._rows is not None else []
        in_flight = GaugeMetricFamily(
            "server_core_model_in_flight", "Requests holding a lease.", labels=["alias"]
        )
        queued = GaugeMetricFamily(
            "server_core_model_queued", "Requests waiting for a lease.", labels=["alias"]
        )
        misses = CounterMetricFamily(
            "server_core_model_probe_failures",
            "/health probes the running server missed (from zero at each start).",
            labels=["alias"],
        )
        for row in rows:
            in_flight.add_metric([row["alias"]], row.get("in_flight") or 0)
            queued.add_metric([row["alias"]], row.get("waiting") or 0)
            if "probe_misses" in row:
                misses.add_metric([row["alias"]], row["probe_misses"])
        yield in_flight
        yield queued
        yield misses
        yield self._gap_family()
        if self._status is None:
            return
        state = GaugeMetricFamily(
            "server_core_model_state",
            "1 for the state each alias is in.",
            labels=["alias", "state"],
        )
        for alias in self._status.aliases():
            value = self._status.value(alias)
            for name in STATES:
                state.add_metric([alias, name], 1.0 if name == value else 0.0)
        yield state

    def _gap_family(self) -> Metric:
        family = HistogramMetricFamily(
            "server_core_inter_event_gap_seconds",
            "Time between two events of a relayed stream.",
            labels=["model"],
        )
        for model, gaps in sorted(self._gaps.items()):
            buckets, running = [], 0
            for bound, n in zip((*GAP_BUCKETS, float("inf")), gaps.counts, strict=True):
                running += n
                buckets.append((floatToGoString(bound), running))
            family.add_metric([model], buckets, gaps.total)
        return family


def _end_event(record: RequestRecord, duration: float, ttft: float | None) -> dict[str, Any]:
    return {
        "type": "request_end",
        "route": record.route,
        "model": record.model,
        "alias": record.alias,
        "status": record.status,
        "ending": record.ending,
        "cause": record.cause,
        "ttft": None if ttft is None else round(ttft, 4),
        "duration": round(duration, 4),
    }


class _NowCollector:
    """Hands the scrape-time gauges to the registry."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.now_metrics()

    def describe(self) -> list[Metric]:
        return []  # no fixed description: the registry does not call collect() to find one
