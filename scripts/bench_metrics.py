#!/usr/bin/env python3
"""Benchmark: what recording a request for the metrics costs, per request.

One "request" is a real ``twisted.web.server.Request`` (on a dummy channel, so no socket
time) answered by a leaf resource that writes the SSE headers' flush, ``--frames`` event
frames and finishes, as a relayed stream does. It runs in two ways:

- bare: the leaf alone;
- recorded: behind ``RecordingResource`` into a ``ServerMetrics``, plus what the reply
  code does (``served``, the stream flag), so the whole per-request cost is counted: the
  record, the first-event timer, the finish callback, the counters and histograms.

The two are interleaved round by round (``--rounds`` of ``--requests`` each, the order
alternating) and the medians of the per-request times are compared. A live ``/api/events``
subscriber adds the cost of building and queueing two events; ``--subscriber`` measures it.

Usage: python scripts/bench_metrics.py [--rounds 31] [--requests 2000] [--frames 20]
       [--subscriber] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.test.requesthelper import DummyChannel

from server_core.metrics import RecordingResource, RouteLabels, ServerMetrics, record_of

ROUTE = b"/v1/chat/completions"
FRAME = b'data: {"choices":[{"delta":{"content":"tok"},"index":0}],"model":"m"}\n\n'


class StreamLeaf(Resource):
    """Writes a stream's frames and finishes; marks the record as the reply code does."""

    isLeaf = True

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.frames = frames

    def render(self, request: Any) -> Any:
        record = record_of(request)
        if record is not None:
            record.served("m", "m")
            record.stream = True
        request.write(b"")
        for _ in range(self.frames):
            request.write(FRAME)
        request.finish()
        return NOT_DONE_YET


def new_request() -> Request:
    request = Request(DummyChannel(), False)
    request.method = b"POST"
    request.path = request.uri = ROUTE
    request.clientproto = b"HTTP/1.1"
    return request


def run(resource: Any, n: int) -> float:
    """Seconds per request over ``n`` requests."""
    start = time.perf_counter()
    for _ in range(n):
        resource.render(new_request())
    return (time.perf_counter() - start) / n


def measure(args: argparse.Namespace) -> dict[str, float]:
    clock = Clock()
    leaf = StreamLeaf(args.frames)
    metrics = ServerMetrics(clock)
    if args.subscriber:
        subscription = metrics.bus.subscribe()
        subscription._events = __import__("collections").deque(maxlen=1)  # keep it bounded
    recorded = RecordingResource(
        leaf, metrics, clock=clock, routes=RouteLabels([ROUTE.decode()]), node_name="bench"
    )
    ways: dict[str, Callable[[], float]] = {
        "bare": lambda: run(leaf, args.requests),
        "recorded": lambda: run(recorded, args.requests),
    }
    for way in ways.values():  # warm up
        way()
    times: dict[str, list[float]] = {"bare": [], "recorded": []}
    for i in range(args.rounds):
        order = ("bare", "recorded") if i % 2 == 0 else ("recorded", "bare")
        for name in order:
            times[name].append(ways[name]())
    bare = statistics.median(times["bare"])
    rec = statistics.median(times["recorded"])
    diffs = [r - b for r, b in zip(times["recorded"], times["bare"], strict=True)]
    return {
        "bare_us": bare * 1e6,
        "recorded_us": rec * 1e6,
        "cost_us": statistics.median(diffs) * 1e6,
        "frames": args.frames,
        "subscriber": bool(args.subscriber),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--subscriber", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args)
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{'way':<10} {'µs/request':>11}   ({args.frames} frames, median of {args.rounds} rounds)"
    )
    print(f"{'bare':<10} {result['bare_us']:>11.2f}")
    print(f"{'recorded':<10} {result['recorded_us']:>11.2f}")
    print(f"{'cost':<10} {result['cost_us']:>11.2f}   (median of the paired differences)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
