"""The ``server`` fixture: a fresh ScriptServer per test, stopped (connections closed) after."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_twisted

from tests.harness.client.scripted import ScriptServer


@pytest_twisted.async_yield_fixture()
async def server() -> AsyncIterator[ScriptServer]:
    srv = ScriptServer()
    yield srv
    await srv.stop()
