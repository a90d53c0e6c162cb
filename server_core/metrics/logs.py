"""One structured log line per finished model request (``server.json_logs``).

Written through ``twisted.logger``'s JSON observer, one JSON object per line, to a file
of its own (standard output by default): model, alias, route, status, ending, cause, TTFT
and duration, plus the node, so lines from several servers can be told apart.
"""

from __future__ import annotations

import sys
from typing import IO

from twisted.logger import Logger, jsonFileLogObserver

from server_core.metrics.requests import RequestRecord

__all__ = ["JsonRequestLog"]


class JsonRequestLog:
    """Writes each finished request as one JSON line (see module doc)."""

    def __init__(self, out: IO[str] | None = None) -> None:
        observer = jsonFileLogObserver(out or sys.stdout, recordSeparator="")
        self._log = Logger(namespace="server_core.request", observer=observer)

    def __call__(self, record: RequestRecord, duration: float, ttft: float | None) -> None:
        self._log.info(
            "{method} {route} {model} {status} {ending}",
            method=record.method,
            route=record.route,
            model=record.model,
            alias=record.alias,
            node=record.node,
            status=record.status,
            stream=record.stream,
            ending=record.ending,
            cause=record.cause,
            ttft=None if ttft is None else round(ttft, 6),
            duration=round(duration, 6),
        )
