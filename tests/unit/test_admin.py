"""AdminApi over a stub context: what /unload reports as stopped."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import defer

from server_core.admin import AdminApi


class StubContext:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.stopped: list[str | None] = []

    def running(self) -> list[dict[str, Any]]:
        return self.rows

    def stop(self, alias_name: str | None = None) -> defer.Deferred[None]:
        self.stopped.append(alias_name)
        return defer.succeed(None)

    def process_for(self, alias_name: str) -> None:
        return None


@pytest_twisted.ensureDeferred
async def test_unload_reports_servers_not_models_that_only_have_a_queue() -> None:
    context = StubContext([{"alias": "a", "state": "ready"}, {"alias": "b", "state": "queued"}])
    admin = AdminApi(context, lambda: ["a", "b"])  # type: ignore[arg-type]
    assert await admin.unload(None) == {"unloaded": ["a"]}
    assert await admin.unload("b") == {"unloaded": []}
    assert context.stopped == [None, "b"]
