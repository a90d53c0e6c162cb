"""ModelStatus: each alias's status from the context's events, and what it counts."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from server_core.interfaces import IStateListener
from server_core.metrics import ModelStatus


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.events: list[dict[str, Any]] = []

    def model_started(self, alias: str) -> None:
        self.calls.append(("started", alias))

    def model_ready(self, alias: str, seconds: float) -> None:
        self.calls.append(("ready", alias, seconds))

    def model_failed(self, alias: str, *, crashed: bool) -> None:
        self.calls.append(("failed", alias, crashed))

    def model_swapped_out(self, alias: str) -> None:
        self.calls.append(("swapped", alias))

    def queue_wait(self, alias: str, seconds: float) -> None:
        self.calls.append(("wait", alias, seconds))

    def publish(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def make() -> tuple[ModelStatus, Sink, Clock]:
    sink, clock = Sink(), Clock()
    return ModelStatus(sink, clock, ["a", "b"]), sink, clock


def test_is_a_state_listener_and_knows_the_configured_aliases_unloaded() -> None:
    status, _, _ = make()
    assert verifyObject(IStateListener, status)
    assert status.aliases() == ["a", "b"]
    assert status.of("a") == {"value": "unloaded"}
    assert status.of("never-heard-of") == {"value": "unloaded"}


def test_start_then_ready_is_loading_then_loaded_and_the_start_is_timed() -> None:
    status, sink, clock = make()
    status.on_state_change("start", "a", {})
    assert status.of("a") == {"value": "loading"}
    clock.advance(2.5)
    status.on_state_change("ready", "a", {"port": 1})
    assert status.of("a") == {"value": "loaded"}
    assert sink.calls == [("started", "a"), ("ready", "a", 2.5)]
    assert sink.events == [
        {"type": "state", "alias": "a", "status": "loading"},
        {"type": "state", "alias": "a", "status": "loaded", "start_seconds": 2.5},
    ]


def test_a_failure_while_loading_is_a_failed_start_and_keeps_its_reason() -> None:
    status, sink, _ = make()
    status.on_state_change("start", "a", {})
    status.on_state_change("failed", "a", {"error": "bad flags"})
    assert status.of("a") == {"value": "failed", "reason": "bad flags"}
    assert ("failed", "a", False) in sink.calls
    # A later stop does not hide why it failed; a new start does.
    status.on_state_change("stop", "a", {"reason": "requested"})
    assert status.value("a") == "failed"
    status.on_state_change("start", "a", {})
    assert status.of("a") == {"value": "loading"}


def test_a_failure_after_ready_is_a_crash() -> None:
    status, sink, _ = make()
    status.on_state_change("start", "a", {})
    status.on_state_change("ready", "a", {})
    status.on_state_change("failed", "a", {"error": "exited with status 1"})
    assert ("failed", "a", True) in sink.calls
    assert status.of("a") == {"value": "failed", "reason": "exited with status 1"}


def test_a_swap_is_counted_for_the_model_swapped_out_and_told_as_an_event() -> None:
    status, sink, _ = make()
    status.on_state_change("start", "a", {})
    status.on_state_change("ready", "a", {})
    status.on_state_change("stop", "a", {"reason": "swap to 'b'"})
    assert status.of("a") == {"value": "unloaded"}
    assert ("swapped", "a") in sink.calls
    assert {"type": "swap", "alias": "a", "to": "b"} in sink.events
    status.on_state_change("stop", "b", {"reason": "idle for 300 s"})
    assert sink.calls.count(("swapped", "b")) == 0


def test_a_lease_reports_its_queue_wait_and_unknown_events_are_ignored() -> None:
    status, sink, _ = make()
    status.on_state_change("request", "a", {"in_flight": 2, "wait": 0.75})
    status.on_state_change("request", "a", {"in_flight": 1})  # an older context: no wait
    status.on_state_change("something-new", "a", {})
    assert sink.calls == [("wait", "a", 0.75)]
    assert sink.events[0] == {"type": "lease", "alias": "a", "in_flight": 2, "wait": 0.75}
