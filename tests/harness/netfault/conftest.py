"""The ``env`` fixture: an ``Env`` that closes every socket the test opened."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.harness.netfault.support import Env


@pytest_twisted.async_yield_fixture
async def env() -> Any:
    e = Env()
    yield e
    await e.close()
