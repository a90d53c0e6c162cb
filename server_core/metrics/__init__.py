"""Observability: Prometheus metrics, request outcomes, model status and live events.

A leaf package: it imports nothing of server_core but ``interfaces``. The web layer
serves what it holds (``web.status_routes``); ``reply`` fills in each request's record;
the shared context reports to ``ModelStatus`` through its ``IStateListener`` seam.
"""

from server_core.metrics.events import EventBus, Subscription
from server_core.metrics.outcome import ENDING_KINDS, cause_of
from server_core.metrics.registry import CONTENT_TYPE, ServerMetrics
from server_core.metrics.requests import RecordingResource, RequestRecord, RouteLabels, record_of
from server_core.metrics.state import ModelStatus

__all__ = [
    "CONTENT_TYPE",
    "ENDING_KINDS",
    "EventBus",
    "ModelStatus",
    "RecordingResource",
    "RequestRecord",
    "RouteLabels",
    "ServerMetrics",
    "Subscription",
    "cause_of",
    "record_of",
]
