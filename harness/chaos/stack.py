"""The chaos runner's spawn mode: fake upstreams, netfault lanes and ``twistd server-core``.

``SpawnedStack.start(...)`` builds, in a temporary directory:

* K ``fake-llama-server`` children (``FakeLlamaProcess``), aliases ``chaos-a``,
  ``chaos-b``, ... (external aliases of server_core, one per fake);
* L in-process netfault ``FaultProxy`` lanes, lane i in front of fake ``i % K``,
  external aliases ``chaos-net-0``, ...; the runner lends a lane to one request at a time
  and puts that request's toxic on it;
* one managed alias ``chaos-managed`` whose ``llama_server.executable`` is a small Python
  script running the fake llama-server (server_core spawns, crashes and restarts real
  children);
* ``twistd -n server-core`` as a child with low upstream timeouts (so stalls and hangs
  end quickly), see ``harness.chaos.server_child``.

It also measures server_core from outside (``harness.chaos.procfs``: fds, RSS) and
stops it with SIGTERM like an operator would.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from harness.chaos.draw_extra import STARTUP_FAULTS
from harness.chaos.procfs import FdCensus, fd_census, rss_kib
from harness.chaos.server_child import ServerChild, child_env, spawn_server
from harness.fake_llama import FakeLlamaProcess
from harness.netfault import FaultProxy

__all__ = [
    "DIRECT_PREFIX",
    "EMBED_ALIAS",
    "LANE_PREFIX",
    "LIVE_ALIAS",
    "MANAGED_ALIAS",
    "STARTUP_PREFIX",
    "Lane",
    "SpawnedStack",
    "StackSettings",
]

DIRECT_PREFIX = "chaos-"
MANAGED_ALIAS = "chaos-managed"
LANE_PREFIX = "chaos-net-"
LIVE_ALIAS = "chaos-live"  # a fake whose live fault set the runner changes
EMBED_ALIAS = "chaos-embed"  # a fake started with --embeddings
STARTUP_PREFIX = "chaos-startup-"  # managed aliases whose child has a process fault


@dataclass(frozen=True)
class StackSettings:
    """How spawn mode builds its stack."""

    fakes: int = 2
    lanes: int = 3
    managed: bool = True
    parallel: int = 64  # slots of every fake (queued requests get no headers)
    fake_seed: int = 0
    proxy_seed: int = 0
    idle_timeout: float = 1.5  # server_core upstream idle timeout: ends stalls
    header_timeout: float = 2.5  # server_core upstream header timeout: ends hangs
    keepalive_interval: float = 0.5
    drain_timeout: float = 2.0
    stop_grace: float = 2.0
    start_timeout: float = 20.0
    n_ctx_slot: int = 4096
    keep_dir: bool = False
    python: str = sys.executable
    # The later kinds' pieces, only when those kinds are enabled (the stack of a run
    # without them is the one it always was).
    live: bool = False
    embed: bool = False
    startup: bool = False

    @property
    def startup_aliases(self) -> tuple[tuple[str, str], ...]:
        """(alias, the child's --fault SPEC) of the startup kind's managed aliases."""
        if not (self.startup and self.managed):
            return ()
        return tuple((f"{STARTUP_PREFIX}{name}", spec) for name, spec in STARTUP_FAULTS)

    @property
    def upstream_hosts(self) -> int:
        """How many upstreams server_core may pool connections to."""
        managed = (1 + len(self.startup_aliases)) if self.managed else 0
        return self.fakes + self.lanes + managed + int(self.live) + int(self.embed)

    @property
    def direct_aliases(self) -> tuple[str, ...]:
        """The external aliases of the fakes: ``chaos-a``, ``chaos-b``, ..."""
        return tuple(f"{DIRECT_PREFIX}{chr(ord('a') + i)}" for i in range(self.fakes))

    @property
    def lane_aliases(self) -> tuple[str, ...]:
        """The external aliases of the netfault lanes: ``chaos-net-0``, ..."""
        return tuple(f"{LANE_PREFIX}{i}" for i in range(self.lanes))

    def fake_flags(self) -> list[str]:
        """The ``fake-llama-server`` flags of every fake, the managed one included."""
        return [
            "-np",
            str(self.parallel),
            "-c",
            str(self.parallel * self.n_ctx_slot),
            "--seed",
            str(self.fake_seed),
        ]


@dataclass
class Lane:
    """A netfault lane: an external alias whose upstream is a FaultProxy."""

    alias: str
    proxy: FaultProxy
    model: str  # the alias of the fake behind it


@dataclass
class SpawnedStack:
    """A running spawn-mode stack; ``start`` builds it, ``stop`` takes it down."""

    settings: StackSettings
    reactor: Any
    tmpdir: str
    fakes: list[FakeLlamaProcess] = field(default_factory=list)
    lanes: list[Lane] = field(default_factory=list)
    server: ServerChild | None = None
    port: int = 0
    config_path: str = ""
    managed_alias: str | None = None
    live_fake: FakeLlamaProcess | None = None
    embed_fake: FakeLlamaProcess | None = None
    _stopping: defer.Deferred[None] | None = None

    @property
    def url(self) -> str:
        """The base URL of server-core."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The pid of server-core."""
        assert self.server is not None
        return self.server.pid

    def expected_model(self, alias: str) -> str:
        """The ``model`` a response for ``alias`` must carry: server_core answers with
        the alias the client asked for, a lane's too (not the name of the fake behind)."""
        return alias

    @classmethod
    async def start(cls, settings: StackSettings, reactor: Any) -> SpawnedStack:
        """Build the whole stack; on any failure stop what was started and re-raise."""
        tmpdir = tempfile.mkdtemp(prefix="harness-chaos-")
        stack = cls(settings, reactor, tmpdir)
        try:
            await stack._start()
        except BaseException:
            await stack.stop()
            raise
        return stack

    async def _start(self) -> None:
        s = self.settings
        env = child_env()
        for alias in s.direct_aliases:
            self.fakes.append(self._fake(["-a", alias], env))
        extra = []
        if s.live:
            self.live_fake = self._fake(["-a", LIVE_ALIAS], env)
            extra.append(self.live_fake)
        if s.embed:
            self.embed_fake = self._fake(["-a", EMBED_ALIAS, "--embeddings"], env)
            extra.append(self.embed_fake)
        await defer.gatherResults([f.started() for f in [*self.fakes, *extra]], consumeErrors=True)
        for i, alias in enumerate(s.lane_aliases):
            fake = self.fakes[i % len(self.fakes)]
            assert fake.port is not None
            proxy = FaultProxy(
                0, ("127.0.0.1", fake.port), seed=s.proxy_seed + i, reactor=self.reactor
            )
            self.lanes.append(Lane(alias, proxy, s.direct_aliases[i % len(self.fakes)]))
            await proxy.start()
        self.config_path = self._write_config()
        self.server = spawn_server(
            self.reactor, python=s.python, config_path=self.config_path, workdir=self.tmpdir
        )
        self.port = await self.server.listening_port(timeout=60.0)

    def _fake(self, flags: list[str], env: dict[str, str]) -> FakeLlamaProcess:
        s = self.settings
        return FakeLlamaProcess(
            [*flags, *s.fake_flags()], reactor=self.reactor, env=env, python=s.python
        )

    @property
    def all_fakes(self) -> list[FakeLlamaProcess]:
        """Every fake the runner started (not the managed children)."""
        extra = [f for f in (self.live_fake, self.embed_fake) if f is not None]
        return [*self.fakes, *extra]

    def _write_config(self) -> str:
        s = self.settings
        lines = [
            "server:",
            "  listen: tcp:0:interface=127.0.0.1",
            f"  keepalive_interval: {s.keepalive_interval}",
            f"  drain_timeout: {s.drain_timeout}",
            "  upstream:",
            "    connect_timeout: 5",
            f"    header_timeout: {s.header_timeout}",
            f"    idle_timeout: {s.idle_timeout}",
            "external:",
        ]
        for fake, alias in zip(self.fakes, s.direct_aliases, strict=True):
            lines.append(f"  - {{alias: {alias}, url: 'http://127.0.0.1:{fake.port}'}}")
        for lane in self.lanes:
            lines.append(f"  - {{alias: {lane.alias}, url: 'http://127.0.0.1:{lane.proxy.port}'}}")
        for alias, extra in ((LIVE_ALIAS, self.live_fake), (EMBED_ALIAS, self.embed_fake)):
            if extra is not None:
                lines.append(f"  - {{alias: {alias}, url: 'http://127.0.0.1:{extra.port}'}}")
        if s.managed:
            self.managed_alias = MANAGED_ALIAS
            lines += self._managed_config()
        path = os.path.join(self.tmpdir, "server-core.yaml")
        with open(path, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        return path

    def _managed_config(self) -> list[str]:
        """The ``llama_server`` and ``aliases`` sections: the fake as a managed child."""
        s = self.settings
        script = os.path.join(self.tmpdir, "llama-server")
        with open(script, "w") as fh:
            # A Python script, not `sh -c exec python`: the child's command line then
            # names the executable, as llama-server's does, so orphan reaping matches.
            fh.write(
                f"#!{s.python}\nimport sys\nfrom harness.fake_llama.cli import main\n"
                "sys.exit(main())\n"
            )
        os.chmod(script, 0o700)
        model = self._model_file("model")
        lines = [
            "llama_server:",
            f"  executable: {json.dumps(script)}",
            f"  args: {json.dumps(s.fake_flags())}",
            # One slot per startup alias too: a child that fails to start must never
            # evict the managed child of the other requests.
            f"  max_loaded: {1 + len(s.startup_aliases)}",
            "  ttl: -1",
            f"  start_timeout: {s.start_timeout}",
            f"  stop_grace: {s.stop_grace}",
            "  max_queue: 1024",
        ]
        if s.startup_aliases:
            lines.append("  variants:")
            for alias, spec in s.startup_aliases:
                args = [*s.fake_flags(), "--fault", spec]
                lines.append(f"    {alias}: {{args: {json.dumps(args)}}}")
        lines += ["aliases:", f"  - {{alias: {MANAGED_ALIAS}, model: {json.dumps(model)}}}"]
        for alias, _spec in s.startup_aliases:
            path = json.dumps(self._model_file(alias))
            lines.append(f"  - {{alias: {alias}, model: {path}, variant: {alias}}}")
        return lines

    def _model_file(self, name: str) -> str:
        """A dummy model file (the fake does not read it; server_core checks it exists)."""
        path = os.path.join(self.tmpdir, f"{name}.gguf")
        with open(path, "wb") as fh:
            fh.write(b"GGUF")
        return path

    def log_tail(self, n: int = 30) -> list[str]:
        """The last ``n`` output lines of server-core."""
        return [] if self.server is None else list(self.server.lines)[-n:]

    def census(self) -> FdCensus:
        """server-core's open file descriptors now."""
        return fd_census(self.pid, self.port)

    def rss_kib(self) -> int:
        """server-core's RSS now, in KiB."""
        return rss_kib(self.pid)

    async def stop_server(self) -> tuple[int | None, bool]:
        """Stop twistd as an operator would (SIGTERM). (exit status, stopped in time)."""
        if self.server is None:
            return None, True
        s = self.settings
        return await self.server.stop(s.drain_timeout + s.stop_grace + 10.0)

    def stop(self) -> defer.Deferred[None]:
        """Stop everything still running and remove the temporary directory. Safe to
        call more than once (e.g. from a shutdown trigger and from the runner)."""
        if self._stopping is None:
            self._stopping = defer.ensureDeferred(self._stop())
        d: defer.Deferred[None] = defer.Deferred()

        def relay(result: object) -> object:
            d.callback(None)  # every caller learns that the stop finished
            return None if isinstance(result, Failure) else result

        self._stopping.addBoth(relay)
        return d

    async def _stop(self) -> None:
        try:
            if self.server is not None and not self.server.exited:
                await self.stop_server()
        finally:
            for lane in self.lanes:
                await lane.proxy.stop()
            await defer.gatherResults(
                [f.stop(grace=2.0) for f in self.all_fakes], consumeErrors=True
            )
            if not self.settings.keep_dir:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
