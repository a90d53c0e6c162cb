"""The fake llama-server itself: lifecycle (bind, load, stop, crash) and fault sets.

``FakeServer`` is used both in-process (``start_fake_server``) and by the
``fake-llama-server`` command line (``cli.py``, ``runner.py``). Its settings are
``config.FakeConfig`` (re-exported here), its HTTP API is ``resource.py``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import error as ierror
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTCP, IReactorTime
from twisted.python.failure import Failure

from harness.fake_llama._server_view import Abortable
from harness.fake_llama.config import FakeConfig, Stats
from harness.fake_llama.connections import Connections, TrackingSite
from harness.fake_llama.faults import REQUEST_KEYS, Faults, parse_faults
from harness.fake_llama.resource import FakeLlamaResource
from harness.fake_llama.slots import SlotPool
from harness.fake_llama.templates import TemplateError, resolve_template

__all__ = [
    "BindError",
    "FakeConfig",
    "FakeServer",
    "LoadError",
    "Stats",
    "start_fake_server",
]


class BindError(Exception):
    """The server could not bind its port (or ``bind_fail`` was injected)."""


class LoadError(Exception):
    """Loading the "model" failed (missing file, ``crash_on_load``)."""


class FakeServer:
    """One fake llama-server on one port.

    Lifecycle: ``listen()`` binds (state ``loading``: every route answers 503), then
    ``start_loading()`` turns it ``ready`` after ``load_delay`` (or ``failed`` /
    stays ``loading`` with ``crash_on_load`` / ``never_ready``). ``stop()`` closes
    the port and every connection. Hooks let the CLI turn events into process
    behaviour (print the listening line, exit on crash).
    """

    def __init__(
        self,
        config: FakeConfig,
        reactor: Any = None,
        *,
        log: Callable[[str], None] | None = None,
        on_ready: Callable[[FakeServer], None] | None = None,
        on_load_failed: Callable[[FakeServer, str], None] | None = None,
        on_crash: Callable[[FakeServer], None] | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.config = config
        self.reactor = reactor
        self.chat_template = resolve_template(config.chat_template, jinja=config.jinja)
        self.faults = parse_faults(config.faults)
        self.process_faults = self.faults.process_part()
        self.request_defaults = self.faults.request_part()
        self.live_faults: Faults | None = None
        self.state = "new"
        self.stats = Stats()
        self.slots = SlotPool(max(1, config.parallel))
        self.log_lines: list[str] = []
        self._log = log
        self._on_ready = on_ready
        self._on_load_failed = on_load_failed
        self._on_crash = on_crash
        self._port: IListeningPort | None = None
        self._load_call: IDelayedCall | None = None
        self._ready_waiters: list[Deferred[FakeServer]] = []
        self.connections = Connections()
        self.jobs: set[Abortable] = set()
        self.request_counter = 0
        self.task_counter = 0
        self.stopping = False
        self.started_at = reactor.seconds()
        self.vocab_extra: dict[int, str] = {}  # /tokenize ids of unknown words
        self.site = TrackingSite(FakeLlamaResource(self), self.connections, reactor)

    # -- logging ---------------------------------------------------------------------

    def log(self, line: str) -> None:
        """A log line in llama-server style (kept in ``log_lines``)."""
        self.log_lines.append(line)
        if self._log is not None:
            self._log(line)
        elif self.config.verbose:
            try:
                print(line, file=sys.stderr, flush=True)
            except (OSError, ValueError):
                pass  # stderr is gone with the parent: logging must not break serving

    def debug(self, line: str) -> None:
        """A log line only with ``verbose`` (request and slot events)."""
        if self.config.verbose:
            self.log(line)

    # -- addresses -----------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (the real one with ``port=0``)."""
        if self._port is None:
            raise RuntimeError("not listening")
        return cast(Any, self._port.getHost()).port

    @property
    def host(self) -> str:
        """The address it listens on."""
        return self.config.host

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, brackets around an IPv6 host."""
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def cancelled(self) -> int:
        """Generations cancelled by a client disconnect."""
        return self.stats.cancelled

    @property
    def requests(self) -> int:
        """Generation requests that reached a handler."""
        return self.stats.requests

    @property
    def ready(self) -> bool:
        """The model is loaded: requests are served."""
        return self.state == "ready"

    # -- lifecycle -------------------------------------------------------------------

    def listen(self) -> int:
        """Bind the port (state becomes ``loading``). Raises BindError."""
        host, port = self.config.host, self.config.port
        self.log("srv  llama_server: binding port with default address family")
        if self.process_faults.bind_fail:
            self._bind_failed(host, port)
        try:
            self._port = cast(IReactorTCP, self.reactor).listenTCP(
                port, cast(Any, self.site), interface=host
            )
        except ierror.CannotListenError:
            self._bind_failed(host, port)
        self.state = "loading"
        return self.port

    def _bind_failed(self, host: str, port: int) -> None:
        msg = f"couldn't bind HTTP server socket, hostname: {host}, port: {port}"
        self.log(f"srv    llama_server: {msg}")
        self.log("srv    llama_server: exiting due to HTTP server error")
        self.state = "failed"
        raise BindError(msg)

    def start_loading(self) -> None:
        """Begin the simulated model load (call after ``listen()``)."""
        pf = self.process_faults
        path = self.config.model_path
        self.log("srv  llama_server: loading model")
        if path is not None:
            self.log(f"srv    load_model: loading model '{path}'")
        if path is not None and not os.path.isfile(path):
            self._load_call = self.reactor.callLater(0, self._load_failed_missing, path)
        elif pf.crash_on_load is not None:
            self._load_call = self.reactor.callLater(pf.crash_on_load, self._load_failed_crash)
        elif pf.never_ready:
            self.log("srv    load_model: (never_ready) the model will never finish loading")
        else:
            self._load_call = self.reactor.callLater(pf.load_delay, self._loaded)

    def _loaded(self) -> None:
        self._load_call = None
        if self.state != "loading":
            return
        self.state = "ready"
        self.log(f"srv    load_model: model loaded, n_slots = {self.slots.size}")
        self.log("srv  llama_server: model loaded")
        self.log(f"srv  llama_server: server is listening on {self.url}")
        self.log("srv  update_slots: all slots are idle")
        if self._on_ready is not None:
            self._on_ready(self)
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(self)

    def _load_failed_missing(self, path: str) -> None:
        reason = "Is a directory" if os.path.isdir(path) else "No such file or directory"
        self._fail_load(
            [
                f"gguf_init_from_file: failed to open GGUF file '{path}' ({reason})",
                "llama_model_load: error loading model: llama_model_loader: "
                f"failed to load model from {path}",
                "llama_model_load_from_file_impl: failed to load model",
                f"srv    load_model: failed to load model, '{path}'",
            ],
            f"failed to load model '{path}'",
        )

    def _load_failed_crash(self) -> None:
        self._fail_load(
            [
                "llama_model_load: error loading model: (crash_on_load) injected load failure",
                "llama_model_load_from_file_impl: failed to load model",
                f"srv    load_model: failed to load model, '{self.config.model_path or ''}'",
            ],
            "crash_on_load",
        )

    def _fail_load(self, lines: list[str], reason: str) -> None:
        self._load_call = None
        for line in lines:
            self.log(line)
        self.log("srv    operator(): operator(): cleaning up before exit...")
        self.log("srv  llama_server: exiting due to model loading error")
        self.state = "failed"
        if self._on_load_failed is not None:
            self._on_load_failed(self, reason)
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.errback(Failure(LoadError(reason)))
        if self._port is not None:
            self._port.stopListening()
        self.connections.close_all(abort=True)

    def when_ready(self) -> Deferred[FakeServer]:
        """Fires when the model is loaded (errback LoadError if loading fails)."""
        if self.state == "ready":
            return succeed(self)
        if self.state in ("failed", "stopped", "crashed"):
            return fail(LoadError(self.state))
        d: Deferred[FakeServer] = Deferred()
        self._ready_waiters.append(d)
        return d

    def crash(self) -> None:
        """Injected crash (``crash_after``): the CLI exits the process; in-process the
        server dies on the spot: port closed, every connection aborted."""
        self.log("srv  crash: (crash_after) injected process crash")
        if self._on_crash is not None:
            self._on_crash(self)
            return
        self.state = "crashed"
        self.stopping = True
        if self._load_call is not None and self._load_call.active():
            self._load_call.cancel()
        for job in list(self.jobs):
            job.abort()
        if self._port is not None:
            self._port.stopListening()
        self.connections.close_all(abort=True)

    def stop(self, *, abort: bool = True) -> Deferred[None]:
        """Close the port and every connection; fires once all are gone.

        ``abort=True`` resets connections (RST); ``False`` closes them with FIN,
        like a process that exits.
        """
        self.stopping = True
        if self.state not in ("failed", "crashed"):
            self.state = "stopped"
        if self._load_call is not None and self._load_call.active():
            self._load_call.cancel()
        self._load_call = None
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.errback(Failure(LoadError("stopped")))
        for job in list(self.jobs):
            job.abort()
        pending: list[Deferred[Any]] = []
        if self._port is not None:
            port, self._port = self._port, None
            stopped = port.stopListening()
            if stopped is not None:
                pending.append(stopped)
        pending.extend(self.connections.close_all(abort=abort))
        done: Deferred[None] = DeferredList(pending, consumeErrors=True).addCallback(lambda _: None)
        return done

    @property
    def open_connections(self) -> int:
        """HTTP connections open right now."""
        return len(self.connections)

    # -- faults ----------------------------------------------------------------------

    def set_live_faults(self, spec: str | Faults | None) -> Faults | None:
        """Replace the live request-fault set (``POST /_fault``); None clears it."""
        if spec is None:
            self.live_faults = None
        else:
            self.live_faults = parse_faults(spec, allowed=REQUEST_KEYS)
        return self.live_faults

    def clear_live_faults(self) -> None:
        """Back to the ``--fault`` request defaults (``DELETE /_fault``)."""
        self.live_faults = None

    def fault_state(self) -> dict[str, Any]:
        """Every fault set as a SPEC (``GET /_fault``)."""
        return {
            "process": self.process_faults.to_spec(),
            "request_default": self.request_defaults.to_spec(),
            "live": None if self.live_faults is None else self.live_faults.to_spec(),
            "effective": (
                self.live_faults if self.live_faults is not None else self.request_defaults
            ).to_spec(),
        }


def start_fake_server(
    config: FakeConfig | None = None,
    reactor: IReactorTime | None = None,
    *,
    wait_ready: bool = True,
    log: Callable[[str], None] | None = None,
) -> Deferred[FakeServer]:
    """Start a fake llama-server in this process and reactor.

    Fires with the FakeServer once it listens and (``wait_ready=True``) has loaded;
    errbacks with BindError, LoadError or TemplateError (a chat template llama-server
    refuses at start). Always ``await server.stop()`` at the end.
    """
    try:
        server = FakeServer(config or FakeConfig(), reactor, log=log)
    except TemplateError as e:
        return fail(e)
    try:
        server.listen()
    except BindError as e:
        return fail(e)
    server.start_loading()
    if not wait_ready:
        return succeed(server)

    def _cleanup(f: Failure) -> Failure:
        server.stop()
        return f

    return server.when_ready().addErrback(_cleanup)
