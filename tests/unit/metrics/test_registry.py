"""ServerMetrics: what a scrape shows after recorded requests and model changes."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock

from server_core.metrics import ModelStatus, RequestRecord, ServerMetrics
from server_core.metrics.logs import JsonRequestLog


def scrape(metrics: ServerMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def finished_stream(metrics: ServerMetrics, clock: Clock, cause: str | None) -> RequestRecord:
    record = RequestRecord("/v1/chat/completions", "POST", clock.seconds(), "n")
    metrics.request_started(record)
    record.served("m", "a")
    record.stream = True
    clock.advance(0.2)
    record.first_event = clock.seconds()
    clock.advance(1.0)
    if cause is not None:
        record.error_event(cause)
    record.finished(200, gone=False)
    metrics.request_finished(record)
    return record


def test_requests_endings_and_timings_are_counted() -> None:
    clock = Clock()
    metrics = ServerMetrics(clock)
    finished_stream(metrics, clock, None)
    finished_stream(metrics, clock, "upstream_reset")
    unrouted = RequestRecord("other", "GET", clock.seconds(), "n")
    metrics.request_started(unrouted)
    unrouted.finished(404, gone=False)
    metrics.request_finished(unrouted)
    s = scrape(metrics)
    route = "/v1/chat/completions"
    assert s[key("server_core_requests_total", route=route, model="m", status="200")] == 2
    assert s[key("server_core_requests_total", route="other", model="", status="404")] == 1
    ending = "server_core_endings_total"
    assert s[key(ending, model="m", stream="true", kind="complete", cause="")] == 1
    assert s[key(ending, model="m", stream="true", kind="error_event", cause="upstream_reset")] == 1
    assert not [k for k in s if k[0] == ending and ("model", "") in k[1]]  # no model, no ending
    assert s[key("server_core_time_to_first_event_seconds_sum", model="m")] == pytest.approx(0.4)
    assert s[key("server_core_request_duration_seconds_sum", model="m")] == pytest.approx(2.4)
    assert s[key("server_core_http_in_flight")] == 0


def test_the_gauges_of_the_moment_are_read_at_scrape_time() -> None:
    clock = Clock()
    metrics = ServerMetrics(clock)
    rows: list[dict[str, Any]] = [{"alias": "a", "in_flight": 2, "waiting": 3}]
    status = ModelStatus(metrics, clock, ["a", "b"])
    metrics.watch(status, lambda: rows)
    status.on_state_change("start", "a", {})
    clock.advance(4)
    status.on_state_change("ready", "a", {})
    status.on_state_change("request", "a", {"in_flight": 1, "wait": 0.5})
    s = scrape(metrics)
    assert s[key("server_core_model_in_flight", alias="a")] == 2
    assert s[key("server_core_model_queued", alias="a")] == 3
    assert s[key("server_core_model_state", alias="a", state="loaded")] == 1
    assert s[key("server_core_model_state", alias="a", state="loading")] == 0
    assert s[key("server_core_model_state", alias="b", state="unloaded")] == 1
    assert s[key("server_core_model_starts_total", alias="a")] == 1
    assert s[key("server_core_model_start_seconds_sum", alias="a")] == 4
    assert s[key("server_core_queue_wait_seconds_sum", alias="a")] == 0.5
    rows.clear()  # the context's rows change: so does the next scrape
    assert key("server_core_model_in_flight", alias="a") not in scrape(metrics)


def test_crashes_start_failures_and_swaps_are_counted_per_alias() -> None:
    clock = Clock()
    metrics = ServerMetrics(clock)
    status = ModelStatus(metrics, clock, ["a"])
    for event, detail in [
        ("start", {}), ("failed", {"error": "x"}),
        ("start", {}), ("ready", {}), ("failed", {"error": "crash"}),
        ("start", {}), ("ready", {}), ("stop", {"reason": "swap to 'b'"}),
    ]:  # fmt: skip
        status.on_state_change(event, "a", detail)
    s = scrape(metrics)
    assert s[key("server_core_model_start_failures_total", alias="a")] == 1
    assert s[key("server_core_model_crashes_total", alias="a")] == 1
    assert s[key("server_core_model_swaps_total", alias="a")] == 1
    assert s[key("server_core_model_starts_total", alias="a")] == 3


def test_request_ends_are_published_only_while_someone_listens() -> None:
    clock = Clock()
    metrics = ServerMetrics(clock)
    finished_stream(metrics, clock, None)  # nobody listens: nothing kept
    events = metrics.bus.subscribe()
    finished_stream(metrics, clock, "stall")
    queued = list(events._events)
    assert [e["type"] for e in queued] == ["request_start", "request_end"]
    end = queued[1]
    assert (end["model"], end["alias"], end["ending"], end["cause"]) == (
        "m", "a", "error_event", "stall")  # fmt: skip
    assert (end["ttft"], end["duration"]) == (pytest.approx(0.2), pytest.approx(1.2))


def test_the_json_log_is_one_line_per_finished_model_request() -> None:
    clock = Clock()
    out = io.StringIO()
    metrics = ServerMetrics(clock, request_log=JsonRequestLog(out))
    finished_stream(metrics, clock, None)
    finished_stream(metrics, clock, "upstream_reset")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert (first["model"], first["status"], first["ending"]) == ("m", 200, "complete")
    assert (first["ttft"], first["duration"]) == (pytest.approx(0.2), pytest.approx(1.2))
    assert (second["ending"], second["cause"]) == ("error_event", "upstream_reset")


def test_a_model_route_refused_before_a_model_answered_counts_an_ending_without_timings() -> None:
    clock = Clock()
    metrics = ServerMetrics(clock)
    record = RequestRecord("/v1/chat/completions", "POST", 0.0, "n")
    record.model_route = True
    metrics.request_started(record)
    record.finished(429, gone=False)
    metrics.request_finished(record)
    s = scrape(metrics)
    ending = key("server_core_endings_total", model="", stream="false", kind="http_error", cause="")
    assert s[ending] == 1
    assert not [k for k in s if k[0].startswith("server_core_request_duration_seconds_count")]
