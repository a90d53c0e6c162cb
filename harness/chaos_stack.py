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
  end quickly), ``PYTHONPATH`` set to the source root of this checkout and its run-state
  directory inside the temporary directory.

It also measures server_core from outside: ``/proc/PID/fd`` (split into client
connections, upstream connections and the rest), RSS, descendants, and stops it with
SIGTERM like an operator would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.internet import error as ierror
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

import harness
from harness.fake_llama import FakeLlamaProcess
from harness.netfault import FaultProxy

__all__ = [
    "FdCensus",
    "Lane",
    "ServerChild",
    "SpawnedStack",
    "StackSettings",
    "alive",
    "descendants",
    "fd_census",
    "rss_kib",
    "sleep",
    "source_root",
    "wait_until_gone",
]

DIRECT_PREFIX = "chaos-"
MANAGED_ALIAS = "chaos-managed"
LANE_PREFIX = "chaos-net-"
_LISTENING = re.compile(r"server-core listening on http://([^\s:]+):(\d+)")

# Set PR_SET_PDEATHSIG before twistd starts, so the server dies with the runner even
# if the runner is killed with SIGKILL (Linux; elsewhere this is a no-op).
_TWISTD_PRELUDE = (
    "import signal, sys\n"
    "try:\n"
    "    import ctypes\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)\n"
    "except Exception:\n"
    "    pass\n"
    "from twisted.scripts.twistd import run\n"
    "run()\n"
)


def source_root() -> str | None:
    """The checkout holding ``harness`` when it also holds ``server_core`` (so the
    child twistd imports this tree and finds ``twisted/plugins``), else None."""
    root = Path(harness.__file__).resolve().parent.parent
    if (root / "server_core").is_dir():
        return str(root)
    return None


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    root = source_root()
    if root:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


# -- /proc ----------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren, ...)."""
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            parent_of[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found: list[int] = []
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent_of.items() if pp == p]
        found += kids
        frontier += kids
    return sorted(found)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class FdCensus:
    """Open file descriptors of a process, by what they are."""

    total: int = 0
    client_conns: int = 0  # TCP connections accepted on the listening port
    upstream_conns: int = 0  # other TCP connections (the upstream pool)
    listening: int = 0
    other: int = 0  # pipes, files, epoll, ...

    def to_json(self) -> dict[str, int]:
        return {
            "total": self.total,
            "client_conns": self.client_conns,
            "upstream_conns": self.upstream_conns,
            "listening": self.listening,
            "other": self.other,
        }


def _tcp_sockets() -> dict[str, tuple[int, str]]:
    """inode -> (local port, state hex) for every TCP socket of the host."""
    out: dict[str, tuple[int, str]] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as table:
                next(table, None)
                for line in table:
                    cols = line.split()
                    if len(cols) < 10:
                        continue
                    out[cols[9]] = (int(cols[1].rsplit(":", 1)[1], 16), cols[3])
        except FileNotFoundError:
            continue
    return out


def fd_census(pid: int, listen_port: int) -> FdCensus:
    census = FdCensus()
    sockets = _tcp_sockets()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        census.total += 1
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        info = sockets.get(m.group(1)) if m else None
        if info is None:
            census.other += 1
        elif info[1] == "0A":  # TCP_LISTEN
            census.listening += 1
        elif info[0] == listen_port:
            census.client_conns += 1
        else:
            census.upstream_conns += 1
    return census


# -- the twistd child -----------------------------------------------------------------


class ServerChild(ProcessProtocol):
    """``twistd -n server-core`` as a child: recent output lines, a log file, exit."""

    def __init__(self, log_path: str, reactor: Any) -> None:
        self.reactor = reactor
        self.lines: deque[str] = deque(maxlen=400)
        self._log = open(log_path, "a", encoding="utf-8")  # closed in processEnded
        self._partial = {1: b"", 2: b""}
        self._waiters: list[tuple[re.Pattern[str], defer.Deferred[re.Match[str]]]] = []
        self._exit_waiters: list[defer.Deferred[int | None]] = []
        self.exit_status: int | None = None
        self.exited = False

    @property
    def pid(self) -> int:
        return int(self.transport.pid)  # type: ignore[union-attr]

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buf = self._partial.get(childFD, b"") + data
        *complete, self._partial[childFD] = buf.split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            if not self._log.closed:
                self._log.write(line + "\n")
            for pattern, d in list(self._waiters):
                match = pattern.search(line)
                if match:
                    self._waiters.remove((pattern, d))
                    d.callback(match)

    def processEnded(self, reason: Failure) -> None:
        self.exited = True
        value = reason.value
        if isinstance(value, ierror.ProcessTerminated) and value.signal is not None:
            self.exit_status = -int(value.signal)
        else:
            self.exit_status = int(getattr(value, "exitCode", 0) or 0)
        self._log.close()
        waiters, self._waiters = self._waiters, []
        for _, d in waiters:
            d.errback(RuntimeError("server-core exited:\n" + "\n".join(list(self.lines)[-30:])))
        exits, self._exit_waiters = self._exit_waiters, []
        for ed in exits:
            ed.callback(self.exit_status)

    def when_line(self, regex: str, timeout: float) -> defer.Deferred[re.Match[str]]:
        pattern = re.compile(regex)
        for line in self.lines:
            match = pattern.search(line)
            if match:
                return defer.succeed(match)
        if self.exited:
            return defer.fail(RuntimeError("server-core exited:\n" + "\n".join(self.lines)))
        d: defer.Deferred[re.Match[str]] = defer.Deferred()
        self._waiters.append((pattern, d))
        return d.addTimeout(timeout, self.reactor)

    def when_exited(self) -> defer.Deferred[int | None]:
        if self.exited:
            return defer.succeed(self.exit_status)
        d: defer.Deferred[int | None] = defer.Deferred()
        self._exit_waiters.append(d)
        return d

    def signal(self, name: str) -> None:
        if self.exited or self.transport is None:
            return
        try:
            self.transport.signalProcess(name)
        except ierror.ProcessExitedAlready:
            pass

    async def stop(self, timeout: float) -> tuple[int | None, bool]:
        """SIGTERM; SIGKILL after ``timeout``. Returns (exit status, stopped by itself)."""
        if self.exited:
            return self.exit_status, True
        exited = self.when_exited()
        self.signal("TERM")
        try:
            status = await exited.addTimeout(timeout, self.reactor)
            return status, True
        except defer.TimeoutError:
            self.signal("KILL")
            return await self.when_exited(), False


# -- the stack ------------------------------------------------------------------------


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

    @property
    def direct_aliases(self) -> tuple[str, ...]:
        return tuple(f"{DIRECT_PREFIX}{chr(ord('a') + i)}" for i in range(self.fakes))

    @property
    def lane_aliases(self) -> tuple[str, ...]:
        return tuple(f"{LANE_PREFIX}{i}" for i in range(self.lanes))


@dataclass
class Lane:
    """A netfault lane: an external alias whose upstream is a FaultProxy."""

    alias: str
    proxy: FaultProxy
    model: str  # the alias of the fake behind it (what `model` must say)


@dataclass
class SpawnedStack:
    settings: StackSettings
    reactor: Any
    tmpdir: str
    fakes: list[FakeLlamaProcess] = field(default_factory=list)
    lanes: list[Lane] = field(default_factory=list)
    server: ServerChild | None = None
    port: int = 0
    config_path: str = ""
    managed_alias: str | None = None
    _stopping: defer.Deferred[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.server is not None
        return self.server.pid

    def expected_model(self, alias: str) -> str:
        for lane in self.lanes:
            if lane.alias == alias:
                return lane.model
        return alias

    @classmethod
    async def start(cls, settings: StackSettings, reactor: Any) -> SpawnedStack:
        tmpdir = tempfile.mkdtemp(prefix="harness-chaos-")
        stack = cls(settings, reactor, tmpdir)
        try:
            await stack._start()
        except BaseException:
            await stack.stop()
            raise
        return stack

    def _fake_flags(self) -> list[str]:
        s = self.settings
        return [
            "-np",
            str(s.parallel),
            "-c",
            str(s.parallel * s.n_ctx_slot),
            "--seed",
            str(s.fake_seed),
        ]

    async def _start(self) -> None:
        s = self.settings
        env = _child_env()
        for alias in s.direct_aliases:
            self.fakes.append(
                FakeLlamaProcess(
                    ["-a", alias, *self._fake_flags()],
                    reactor=self.reactor,
                    env=env,
                    python=s.python,
                )
            )
        await defer.gatherResults([f.started() for f in self.fakes], consumeErrors=True)
        for i, alias in enumerate(s.lane_aliases):
            fake = self.fakes[i % len(self.fakes)]
            assert fake.port is not None
            proxy = FaultProxy(
                0, ("127.0.0.1", fake.port), seed=s.proxy_seed + i, reactor=self.reactor
            )
            self.lanes.append(Lane(alias, proxy, s.direct_aliases[i % len(self.fakes)]))
            await proxy.start()
        self.config_path = self._write_config()
        self.server = ServerChild(os.path.join(self.tmpdir, "server-core.log"), self.reactor)
        argv = [
            s.python,
            "-c",
            _TWISTD_PRELUDE,
            "-n",
            "--pidfile=",
            "server-core",
            "--config",
            self.config_path,
            "--port",
            "tcp:0:interface=127.0.0.1",
        ]
        state = os.path.join(self.tmpdir, "run")
        self.reactor.spawnProcess(
            self.server,
            s.python,
            argv,
            env=_child_env({"XDG_RUNTIME_DIR": state}),
            path=self.tmpdir,
            childFDs={0: "w", 1: "r", 2: "r"},
        )
        match = await self.server.when_line(_LISTENING.pattern, timeout=60.0)
        self.port = int(match.group(2))

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
        if s.managed:
            self.managed_alias = MANAGED_ALIAS
            script = os.path.join(self.tmpdir, "llama-server")
            with open(script, "w") as fh:
                # A Python script, not `sh -c exec python`: the child's command line then
                # names the executable, as llama-server's does, so orphan reaping matches.
                fh.write(
                    f"#!{s.python}\nimport sys\nfrom harness.fake_llama.cli import main\n"
                    "sys.exit(main())\n"
                )
            os.chmod(script, 0o700)
            model = os.path.join(self.tmpdir, "model.gguf")
            with open(model, "wb") as fh:
                fh.write(b"GGUF")
            lines += [
                "llama_server:",
                f"  executable: {json.dumps(script)}",
                f"  args: {json.dumps(self._fake_flags())}",
                "  max_loaded: 1",
                "  ttl: -1",
                f"  start_timeout: {s.start_timeout}",
                f"  stop_grace: {s.stop_grace}",
                "  max_queue: 1024",
                "aliases:",
                f"  - {{alias: {MANAGED_ALIAS}, model: {json.dumps(model)}}}",
            ]
        path = os.path.join(self.tmpdir, "server-core.yaml")
        with open(path, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        return path

    def log_tail(self, n: int = 30) -> list[str]:
        return [] if self.server is None else list(self.server.lines)[-n:]

    def census(self) -> FdCensus:
        return fd_census(self.pid, self.port)

    def rss_kib(self) -> int:
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
            await defer.gatherResults([f.stop(grace=2.0) for f in self.fakes], consumeErrors=True)
            if not self.settings.keep_dir:
                shutil.rmtree(self.tmpdir, ignore_errors=True)


async def wait_until_gone(pids: Sequence[int], reactor: Any, timeout: float) -> list[int]:
    """Poll until none of ``pids`` is alive; returns those still alive at ``timeout``."""
    deadline = reactor.seconds() + timeout
    while True:
        left = [p for p in pids if alive(p)]
        if not left or reactor.seconds() >= deadline:
            return left
        await sleep(reactor, 0.05)


def sleep(reactor: Any, seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)
