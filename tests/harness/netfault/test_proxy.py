"""Tests for harness.netfault._proxy: ``FaultProxy``'s toxic management and lifecycle."""

from __future__ import annotations

import random

import pytest
import pytest_twisted
from twisted.internet.error import (
    ConnectionDone,
    ConnectionRefusedError,
)

from harness.netfault import (
    DuplicateToxicError,
    InvalidToxicError,
    ToxicNotFoundError,
)
from tests.harness.netfault.support import Env, FakeNet, sleep

pytestmark = pytest.mark.timeout(20)


def test_add_remove_errors() -> None:
    net = FakeNet()
    net.proxy.add_toxic("latency", latency=1)
    with pytest.raises(DuplicateToxicError):
        net.proxy.add_toxic("latency", latency=2)
    with pytest.raises(ToxicNotFoundError):
        net.proxy.remove_toxic("nope")
    with pytest.raises(InvalidToxicError):
        net.proxy.add_toxic("latency", jitter=-5, name="other")
    assert [t.name for t in net.proxy.toxics()] == ["latency_downstream"]


@pytest_twisted.ensureDeferred
async def test_passthrough_both_ways(env: Env) -> None:
    proxy = await env.proxy(env.upstream())
    client = await env.connect(proxy.port)
    payload = random.Random(5).randbytes(200_000)
    client.write(payload)
    assert await client.wait_bytes(len(payload)) == payload
    assert env.factories[0].protocols[0].received == payload
    stats = proxy.stats()
    assert stats.connections_total == 1 and stats.connections_active == 1
    assert stats.upstream.bytes_in == stats.upstream.bytes_out == len(payload)
    assert stats.downstream.bytes_in == stats.downstream.bytes_out == len(payload)
    # client close -> upstream connection closes too
    client.transport.loseConnection()  # type: ignore[union-attr]
    await env.factories[0].protocols[0].lost
    assert (await client.ended()).check(ConnectionDone)


@pytest_twisted.ensureDeferred
async def test_toxicity_over_real_connections(env: Env) -> None:
    proxy = await env.proxy(env.upstream())
    proxy.add_toxic("reset_peer", timeout=0, toxicity=0.0, name="never")
    for _ in range(3):
        client = await env.connect(proxy.port)
        client.write(b"ok")
        assert await client.wait_bytes(2) == b"ok"
    proxy.remove_toxic("never")
    proxy.add_toxic("reset_peer", timeout=0, toxicity=1.0, name="always")
    for _ in range(3):
        client = await env.connect(proxy.port)
        client.write(b"ok")
        assert not (await client.ended()).check(ConnectionDone)
    # the three idle connections still open got it too (runtime add), plus three new
    assert proxy.stats().toxics["always"] == {"applied": 6, "skipped": 0}


@pytest_twisted.ensureDeferred
async def test_add_and_remove_on_open_connection(env: Env) -> None:
    proxy = await env.proxy(env.upstream())
    client = await env.connect(proxy.port)
    client.write(b"a")
    await client.wait_bytes(1)
    proxy.add_toxic("latency", latency=5000)
    client.write(b"b")
    await sleep(0.05)
    assert client.data == b"a"  # held by the new toxic
    proxy.remove_toxic("latency_downstream")
    assert await client.wait_bytes(2) == b"ab"  # flushed at once, not after 5 s
    client.write(b"c")
    assert await client.wait_bytes(3) == b"abc"


@pytest_twisted.ensureDeferred
async def test_stop_closes_listener_and_connections(env: Env) -> None:
    proxy = await env.proxy(env.upstream())
    port = proxy.port
    client = await env.connect(port)
    client.write(b"x")
    await client.wait_bytes(1)
    await proxy.stop()
    await client.lost
    assert proxy.stats().connections_active == 0
    with pytest.raises(ConnectionRefusedError):  # twisted.internet.error
        await env.connect(port)
