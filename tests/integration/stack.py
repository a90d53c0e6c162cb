"""In-process stack for integration tests: fake llama-server(s) + server_core site.

Both listen on real loopback sockets in the test's reactor, so every byte crosses
TCP exactly as in production; only process boundaries are skipped here (tests that
need them spawn ``twistd`` and ``fake-llama-server`` as children).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from twisted.internet import reactor as _reactor

from harness.fake_llama.server import FakeConfig, FakeServer, start_fake_server
from server_core.config import Config, parse_config
from server_core.service import make_service

reactor: Any = _reactor


@dataclass
class Stack:
    fake: FakeServer
    config: Config
    service: Any
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def config_for(fake_url: str, server_yaml: str = "") -> Config:
    text = f"""
server:
  listen: tcp:0:interface=127.0.0.1
{server_yaml}
external:
  - alias: fake
    url: {fake_url}
"""
    return parse_config(text, file="<test>")


@asynccontextmanager
async def stack(
    fake_config: FakeConfig | None = None, *, server_yaml: str = ""
) -> AsyncIterator[Stack]:
    fake = await start_fake_server(fake_config or FakeConfig(alias="fake", parallel=4))
    try:
        config = config_for(fake.url, server_yaml)
        service = make_service(config, reactor)
        listener = list(service)[-1]
        service.startService()
        port = await listener.when_listening
        try:
            yield Stack(fake, config, service, port.getHost().port)
        finally:
            if service.running:  # a test may have stopped it already (shutdown tests)
                await service.stopService()
    finally:
        await fake.stop()
