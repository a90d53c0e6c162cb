"""The twistd service tree: guarded HTTP site, listener, drain on shutdown.

Shutdown order: stop accepting, let responses in flight finish for up to
``drain_timeout`` seconds, end the streams still running with an error event,
then close upstream pools and stop managed processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server

from server_core.admin import AdminApi
from server_core.aliases import LocalAlias
from server_core.config import DEFAULT_EXECUTABLE, Config
from server_core.errors import BadRequest, BodyTooLarge, ContextError
from server_core.llama_install import INSTALL_HINT, find_llama_server
from server_core.llama_process import LlamaServerProcess, reap_orphans
from server_core.router_state import DefaultRouterState
from server_core.routes import OpenAIRoutes, shutting_down
from server_core.shared_context import ContextLimits, DefaultSharedContext
from server_core.template_check import ChatTemplateProbe
from server_core.upstream import UpstreamClient, set_nodelay

__all__ = ["GuardedSite", "build_router", "make_service"]

log = Logger()

HEADER_TIMEOUT = 30.0


class GuardedRequest(server.Request):
    """Rejects bodies over the site's cap with 413 before reading them whole."""

    _received = 0
    _rejected = False

    def _cap(self) -> int:
        site = getattr(self.channel, "site", None)
        return int(getattr(site, "max_body_bytes", 10 * 1024 * 1024))

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._cap():
            self._reject()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._rejected:
            return
        self._received += len(data)
        if self._received > self._cap():
            self._reject()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self._rejected:
            super().requestReceived(command, path, version)

    def process(self) -> None:
        # Klein answers an undecodable URL with an HTML page; ours is JSON like the rest.
        try:
            unquote_to_bytes(self.path).decode("utf-8")
        except UnicodeDecodeError:
            body = BadRequest("The URL is not valid UTF-8 after percent-decoding.").to_json()
            self.setResponseCode(400)
            self.setHeader(b"content-type", b"application/json")
            self.setHeader(b"content-length", str(len(body)).encode())
            self.write(body)
            self.finish()
            return
        super().process()

    def setHeader(self, name: bytes | str, value: bytes | str) -> None:
        # No version banner: the software behind a public port is nobody's business.
        if (name.lower() if isinstance(name, bytes) else name.lower().encode()) == b"server":
            value = b"server-core"
        super().setHeader(name, value)

    def _reject(self) -> None:
        self._rejected = True
        cap = self._cap()
        body = BodyTooLarge(
            f"The request body is larger than {cap} bytes; send a smaller request."
        ).to_json()
        transport = self.channel.transport
        if transport is None:
            return
        transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
        )
        transport.loseConnection()


class GuardedChannel(http.HTTPChannel):
    """Closes connections whose request (headers and body) takes longer than the deadline.

    The deadline also bounds how long an idle keep-alive connection waits for its next
    request; it is off while a response is being produced (streams may last hours).
    """

    header_timeout = HEADER_TIMEOUT
    _deadline: Any = None
    # No byte of a request since the connection opened or the last response: a deadline
    # reached then closes cleanly (FIN) instead of resetting, since nothing was cut.
    _idle = True

    def connectionMade(self) -> None:
        super().connectionMade()
        site = getattr(self, "site", None)
        if isinstance(site, GuardedSite):
            site.channels.add(self)
        # SSE frames are small writes that must leave at once: without TCP_NODELAY,
        # Nagle holds the first event until the client's delayed ACK (up to 40 ms).
        set_nodelay(self.transport)
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.callLater(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def dataReceived(self, data: bytes) -> None:
        if data:
            self._idle = False
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        self._disarm()
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        # Arm before Twisted starts a pipelined request that is already buffered: that
        # request's allContentReceived disarms it again, and a stream is never cut.
        # Buffered bytes of that request reach dataReceived, which clears _idle.
        self._idle = True
        if self.transport is not None and not getattr(self, "_disconnected", False):
            self._arm()
        super().requestDone(request)

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport is None:
            return
        if self._idle:
            # A keep-alive connection that simply ended its idle time. The reset stays as
            # a backstop for a peer that never reads what is still buffered for it.
            self.transport.loseConnection()
            self._deadline = self.callLater(self.header_timeout, self._reset)
        else:
            self._reset()

    def _reset(self) -> None:
        self._deadline = None
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        super().connectionLost(reason)
        site = getattr(self, "site", None)
        if isinstance(site, GuardedSite):
            site.channel_closed(self)


class GuardedSite(server.Site):
    """A Site with a body cap, a header deadline and no version banner."""

    requestFactory = GuardedRequest

    def __init__(self, resource: Any, *, max_body_bytes: int, header_timeout: float, **kw: Any):
        super().__init__(resource, **kw)
        self.max_body_bytes = max_body_bytes
        self.header_timeout = header_timeout
        self.displayTracebacks = False
        self.channels: set[GuardedChannel] = set()
        self._closed_waiters: list[defer.Deferred[None]] = []

    def channel_closed(self, channel: GuardedChannel) -> None:
        self.channels.discard(channel)
        if not self.channels:
            waiters, self._closed_waiters = self._closed_waiters, []
            for d in waiters:
                d.callback(None)

    async def close_connections(self, timeout: float) -> None:
        """Close every client connection after its buffered bytes are written.

        The reactor's own shutdown drops connections without flushing, which would
        cut the last frames (and ``[DONE]``) of streams that ended during the drain.
        """
        if not self.channels:
            return
        d: defer.Deferred[None] = defer.Deferred()
        self._closed_waiters.append(d)
        for channel in list(self.channels):
            if channel.transport is not None:
                channel.transport.loseConnection()
        d.addTimeout(timeout, self.reactor)
        try:
            await d
        except defer.TimeoutError:
            for channel in list(self.channels):
                if channel.transport is not None:
                    channel.transport.abortConnection()  # type: ignore[attr-defined]

    def protocol(self) -> Any:
        # Same wrapper Twisted uses (HTTP/1.1 with optional h2), around our channel.
        channel = GuardedChannel()
        channel.header_timeout = self.header_timeout
        return http._GenericHTTPChannelProtocol(channel)


def build_context(
    config: Config, reactor: Any, client: UpstreamClient
) -> DefaultSharedContext | None:
    """The shared context for managed aliases, or None when the config has none."""
    if not config.aliases.local_aliases():
        return None
    llama = config.llama
    # Children of a server_core that was SIGKILLed may still run: stop them first.
    reaped = reap_orphans()
    if reaped:
        log.warn("stopped {n} llama-server processes left by a previous run", n=len(reaped))

    def make_process(alias: LocalAlias, on_state: Callable[[Any, str, str], None]) -> Any:
        executable, base_args = llama.command_for(alias.exec_variant)
        found = find_llama_server(None if executable == DEFAULT_EXECUTABLE else executable)
        if found is None:
            raise ContextError(
                f"The model '{alias.name}' needs llama-server, which is not installed here. "
                f"The server's operator can install it with {INSTALL_HINT}."
            )
        executable = found
        # The process merges the alias's context_params over these flags itself.
        return LlamaServerProcess(
            alias,
            executable,
            base_args,
            reactor=reactor,
            start_timeout=llama.start_timeout,
            stop_grace=llama.stop_grace,
            on_state=on_state,
        )

    return DefaultSharedContext(
        make_process,
        clock=reactor,
        limits=ContextLimits(
            max_loaded=llama.max_loaded,
            ttl=llama.ttl,
            max_queue=llama.max_queue,
            queue_timeout=llama.queue_timeout,
            max_concurrent_per_alias=llama.max_concurrent_per_alias,
        ),
        template_probe=ChatTemplateProbe(client, reactor),
    )


def build_router(config: Config, reactor: Any) -> DefaultRouterState:
    client = UpstreamClient(reactor, config.server.upstream)
    context = build_context(config, reactor, client)
    return DefaultRouterState(config.aliases, client, context=context)


class DrainService(Service):
    """On stop: wait for responses in flight, then end what is left honestly."""

    def __init__(
        self,
        routes: OpenAIRoutes,
        router: DefaultRouterState,
        site: GuardedSite,
        drain_timeout: float,
        reactor: Any,
    ):
        self._routes = routes
        self._site = site
        self._router = router
        self._drain_timeout = drain_timeout
        self._reactor = reactor

    async def _drain(self) -> None:
        in_flight = self._routes.in_flight
        in_flight.closing = True
        if len(in_flight):
            log.info(
                "draining {n} responses in flight (up to {t:g} s)",
                n=len(in_flight),
                t=self._drain_timeout,
            )
            idle = in_flight.when_idle()
            idle.addTimeout(self._drain_timeout, self._reactor)
            try:
                await idle
            except defer.TimeoutError:
                log.warn("drain timeout: ending {n} responses", n=len(in_flight))
                in_flight.end_all(shutting_down())
        await self._site.close_connections(timeout=5.0)
        await self._router.close()
        # twistd re-raises the signal that stopped the reactor so the exit status says
        # "killed by SIGTERM"; a drained shutdown is a clean one, so exit 0 instead.
        if getattr(self._reactor, "_exitSignal", None) is not None:
            self._reactor._exitSignal = None

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.ensureDeferred(self._drain())


class Listener(StreamServerEndpointService):
    """Announces the bound address (``listening on http://HOST:PORT``) once listening."""

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        waiting = self._waitingForPort
        assert waiting is not None
        self.when_listening: defer.Deferred[Any] = waiting.addCallback(self._announce)

    def _announce(self, port: Any) -> Any:
        address = port.getHost()
        log.info(
            "server-core listening on http://{host}:{port}", host=address.host, port=address.port
        )
        return port


def make_service(config: Config, reactor: Any, listen: str | None = None) -> MultiService:
    """The whole server as one MultiService (what the twistd plugin returns)."""
    router = build_router(config, reactor)
    admin = None
    if router.context is not None:
        local_names = [a.name for a in config.aliases.local_aliases()]
        admin = AdminApi(router.context, lambda: local_names)
    routes = OpenAIRoutes(
        router,
        admin=admin,
        clock=reactor,
        api_keys=config.server.api_keys,
        keepalive_interval=config.server.keepalive_interval,
        idle_timeout=config.server.upstream.idle_timeout,
    )
    site = GuardedSite(
        routes.resource(),
        max_body_bytes=config.server.max_body_bytes,
        header_timeout=HEADER_TIMEOUT,
        reactor=reactor,
    )
    site.noisy = False
    top = MultiService()
    DrainService(routes, router, site, config.server.drain_timeout, reactor).setServiceParent(top)
    endpoint = serverFromString(reactor, listen or config.server.listen)
    listener = Listener(endpoint, site)
    listener._raiseSynchronously = True
    listener.setServiceParent(top)
    top.routes = routes  # type: ignore[attr-defined]
    top.site = site  # type: ignore[attr-defined]
    return top
