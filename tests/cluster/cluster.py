"""A cluster for tests: three ``twistd -n server-core`` nodes on 127.0.0.2-4, each over a
fake llama-server of its own, behind HAProxy running the file server_core.cluster_config
generated for them (docs/scale-out.md)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from harness.client import StreamResult, stream_request
from server_core.cluster_config import haproxy_config, parse_cluster
from tests.integration.procs import Child, fake_argv, reactor, spawn

# Which node serves which model: each node has one model of its own and shares one or
# two with a neighbour, so every fault has a model that must move and one that must fail.
LAYOUT: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("node-a", "127.0.0.2", ("alpha", "shared-ab")),
    ("node-b", "127.0.0.3", ("beta", "shared-ab", "shared-bc")),
    ("node-c", "127.0.0.4", ("gamma", "shared-bc")),
)
# The nodes' upstream timeouts (chaos needs them to judge stalls and hangs).
IDLE_TIMEOUT = 1.5
HEADER_TIMEOUT = 2.5
CHECK_INTERVAL = 0.5
CHECK_FALL = 2
CHECK_TIMEOUT = 1.0


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    assert found, "haproxy is missing: run scripts/install-haproxy (tox does)"
    return found


@dataclass
class Node:
    """One server_core node and its fake upstream."""

    name: str
    host: str
    models: tuple[str, ...]
    port: int
    config: Path
    fake: Child
    server: Child | None = None
    prefix: tuple[str, ...] = ()
    """Run the node's processes through this (``ip netns exec NAME``)."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self) -> list[str]:
        return [
            *self.prefix,
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "server-core",
            "--config",
            str(self.config),
            "--port",
            f"tcp:{self.port}:interface={self.host}",
        ]

    def signal(self, name: str) -> None:
        """Send SIG<name> (Twisted's own signalProcess knows only a few names)."""
        assert self.server is not None
        os.kill(self.server.pid, getattr(signal, f"SIG{name}"))


@dataclass
class Cluster:
    """The nodes, HAProxy in front, and every child process ever started (for the check
    that none is left)."""

    nodes: list[Node]
    haproxy: Child
    port: int
    stats_port: int
    children: list[Child] = field(default_factory=list)
    api_key: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def serving(self, model: str) -> list[Node]:
        return [node for node in self.nodes if model in node.models]

    async def states(self) -> dict[tuple[str, str], str]:
        """HAProxy's view: (backend, server) -> UP / DOWN / ... (the stats CSV)."""
        result = await stream_request(
            f"http://127.0.0.1:{self.stats_port}/;csv", None, method="GET", timeout=5
        )
        assert result.body is not None, result.summary()
        rows = csv.DictReader(io.StringIO(result.body.decode().lstrip("# ")))
        return {(row["pxname"], row["svname"]): row["status"] for row in rows}

    async def backend_of(self, model: str) -> str:
        config = (self.nodes[0].config.parent / "haproxy.cfg").read_text()
        return next(
            line.split()[1]
            for line in config.splitlines()
            if line.strip().endswith(f"-m str {model} }}")
        )

    async def wait_state(self, model: str, node: str, state: str, timeout: float) -> float:
        """Seconds until HAProxy shows ``node`` in ``model``'s backend as ``state``."""
        backend = await self.backend_of(model)
        start = reactor.seconds()
        while True:
            seen = (await self.states()).get((backend, node), "")
            if seen.startswith(state):
                return float(reactor.seconds() - start)
            if reactor.seconds() - start > timeout:
                raise AssertionError(f"{node} in {backend} is still {seen!r}, not {state}")
            await task.deferLater(reactor, 0.05, lambda: None)


def chat_body(model: str, max_tokens: int, *, long: bool = False) -> dict[str, Any]:
    """A chat stream; ``long``: all ``max_tokens`` (the fake's text ends early otherwise)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"hello {model}"}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    return {**body, "ignore_eos": True} if long else body


def served_by(result: StreamResult) -> str | None:
    values = result.headers.get("x-served-by")
    return values[0] if values else None


async def ask(
    cluster: Cluster,
    model: str,
    max_tokens: int = 4,
    *,
    fault: str | None = None,
    timeout: float = 10.0,
    long: bool = False,
    body: dict[str, Any] | None = None,
    **kw: Any,
) -> StreamResult:
    """One chat stream through HAProxy (``body`` replaces the default one)."""
    headers = {"X-Fault": fault} if fault else {}
    if cluster.api_key:
        headers["Authorization"] = f"Bearer {cluster.api_key}"
    return await stream_request(
        cluster.url + "/v1/chat/completions",
        body if body is not None else chat_body(model, max_tokens, long=long),
        headers=headers,
        timeout=timeout,
        **kw,
    )


def node_config(name: str, models: tuple[str, ...], fake_port: int, key: str | None) -> str:
    externals = "".join(
        f"  - alias: {model}\n    url: http://127.0.0.1:{fake_port}\n" for model in models
    )
    keys = f"  api_keys: [{key}]\n" if key else ""
    return (
        f"server:\n  node_name: {name}\n  drain_timeout: 10\n  keepalive_interval: 0.5\n"
        f"  upstream:\n    idle_timeout: {IDLE_TIMEOUT}\n    header_timeout: {HEADER_TIMEOUT}\n"
        f"{keys}external:\n{externals}"
    )


def description(
    nodes: list[Node], port: int, stats_port: int, server_timeout: str = "60s"
) -> dict[str, Any]:
    return {
        "listen": f"127.0.0.1:{port}",
        "stats": f"127.0.0.1:{stats_port}",
        "api_key_env": "CLUSTER_TEST_KEY",
        "log": True,
        "check": {"interval": f"{int(CHECK_INTERVAL * 1000)}ms", "fall": CHECK_FALL},
        "timeouts": {"check": f"{int(CHECK_TIMEOUT * 1000)}ms", "server": server_timeout},
        "nodes": [
            {"name": n.name, "address": f"{n.host}:{n.port}", "models": list(n.models)}
            for n in nodes
        ],
    }


async def _port_of(child: Child, line: str) -> int:
    """The port a child logged in its ``... listening on http://HOST:PORT`` line."""
    match = await child.when_line(line + r"http://\S+:(\d+)", timeout=60)
    return int(match.group(1))


async def _start_nodes(tmp_path: Path, children: list[Child], setup: Setup) -> list[Node]:
    """Fakes, then nodes, all on ports the kernel picked (no race for a free port)."""
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"GGUF fake weights")
    fakes = []
    for name, _, _ in setup.layout:
        argv = fake_argv(str(weights), "--port", "0", "-a", name, "-np", "32")
        prefix = setup.prefixes.get(name, ())
        fakes.append(spawn(f"fake-{name}", [*prefix, *argv, "-c", str(32 * 4096)]))
        children.append(fakes[-1])
    fake_ports = await _gather([_port_of(fake, "listening on ") for fake in fakes])
    nodes: list[Node] = []
    layout = zip(setup.layout, fakes, fake_ports, strict=True)
    for (name, host, models), fake, fake_port in layout:
        config = tmp_path / f"{name}.yaml"
        config.write_text(node_config(name, models, fake_port, setup.api_key))
        node = Node(name, host, models, 0, config, fake, prefix=setup.prefixes.get(name, ()))
        node.server = spawn(name, node.argv())
        children.append(node.server)
        nodes.append(node)
    ports = await _gather(
        [_port_of(n.server, "server-core listening on ") for n in nodes if n.server]
    )
    for node, port in zip(nodes, ports, strict=True):
        node.port = port
    return nodes


async def _gather(coroutines: list[Any]) -> list[int]:
    return list(
        await defer.gatherResults(
            [defer.Deferred.fromCoroutine(c) for c in coroutines], consumeErrors=True
        )
    )


async def _start_haproxy(
    tmp_path: Path, nodes: list[Node], setup: Setup, children: list[Child]
) -> Cluster:
    """HAProxy on two free ports; started again on others when one was taken meanwhile."""
    for _ in range(3):
        port, stats_port = free_port("127.0.0.1"), free_port("127.0.0.1")
        path = tmp_path / "haproxy.cfg"
        text = description(nodes, port, stats_port, setup.server_timeout)
        path.write_text(haproxy_config(parse_cluster(text)))
        haproxy = spawn(
            "haproxy",
            [haproxy_binary(), "-db", "-f", str(path)],
            env={"CLUSTER_TEST_KEY": setup.api_key or "unused"},
        )
        children.append(haproxy)
        running = Cluster(nodes, haproxy, port, stats_port, children, setup.api_key)
        if await _haproxy_sees_all_up(running):
            return running
    raise AssertionError("HAProxy did not start: " + "\n".join(haproxy.lines[-10:]))


async def _haproxy_sees_all_up(cluster: Cluster) -> bool:
    """True once HAProxy shows every server UP; False when it exited (a port was taken)."""
    for _ in range(200):
        if cluster.haproxy.exited:
            return False
        try:
            states = await cluster.states()
        except AssertionError:
            states = {}
        servers = [s for (px, sv), s in states.items() if sv not in ("FRONTEND", "BACKEND")]
        if servers and all(s == "UP" for s in servers):
            return True
        await task.deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"HAProxy never saw every node up: {states}")


@dataclass(frozen=True)
class Setup:
    """What a cluster is made of: ``layout`` (node, address, models); with ``api_key`` the
    nodes require it and HAProxy's checks send it (``${VAR}``); ``prefixes`` run a node's
    processes through a command (a network namespace); HAProxy's ``timeout server``."""

    layout: tuple[tuple[str, str, tuple[str, ...]], ...] = LAYOUT
    api_key: str | None = None
    prefixes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    server_timeout: str = "60s"


@asynccontextmanager
async def cluster(
    tmp_path: Path, api_key: str | None = None, setup: Setup | None = None
) -> AsyncIterator[Cluster]:
    """Start everything; on exit stop it and check that no process is left."""
    setup = setup or Setup(api_key=api_key)
    children: list[Child] = []
    try:
        nodes = await _start_nodes(tmp_path, children, setup)
        yield await _start_haproxy(tmp_path, nodes, setup, children)
    finally:
        await _stop_all(children)


async def _stop_all(children: list[Child]) -> None:
    for child in children:
        if not child.exited:
            os.kill(child.pid, signal.SIGCONT)  # a frozen child cannot act on SIGTERM
    await defer.gatherResults(
        [defer.Deferred.fromCoroutine(c.stop()) for c in children if not c.exited],
        consumeErrors=True,
    )
    # Exited means reaped (processEnded); the nodes run no children of their own.
    left = [c.name for c in children if not c.exited]
    assert not left, f"processes left after the run: {left}"


def report_line(name: str, **values: Any) -> str:
    """One row of the measured table, printed so a run shows it (pytest -s)."""
    line = f"cluster: {name}: " + json.dumps(values, sort_keys=True)
    print(line)
    return line
