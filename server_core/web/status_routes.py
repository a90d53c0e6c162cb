"""What the server is doing, over HTTP: ``/metrics``, ``/ready`` and ``/api/events``.

- ``GET /metrics``: the Prometheus text of ``ServerMetrics``, then the managed children's
  ``llamacpp:*`` families with a ``model`` label (``ChildMetrics``, scraped now), behind
  the API key unless ``server.metrics_public``.
- ``GET /ready``: for load balancers. 503 while draining or when no model can be served;
  ``?model=NAME``: 200 when it can serve now, 200 with ``X-Server-Core-Ready: after-start``
  when it could after a start, 404 for a model this server does not know.
- ``GET /api/events``: an SSE stream (``DirectSse``) of the current status of each managed
  model, then every state change, swap, lease and request end as it happens.
- ``POST /load {"alias": NAME}``: start a managed model ahead of its requests (answers
  once it is ready); ``llama_server.preload`` does the same for its list at startup
  (``PreloadService``). Both go through ``ModelLoader``: a lease taken and given back at
  once, so a start obeys the scheduler like any request (``max_loaded``, swaps, queue).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

from server_core.aliases import LocalAlias
from server_core.errors import AliasNotFound, BadRequest, NotFound, ServerCoreError
from server_core.interfaces import IAliasStore, IRouterState, ISharedContext
from server_core.metrics import CONTENT_TYPE, ServerMetrics, Subscription
from server_core.metrics.children import ChildMetrics
from server_core.sse import DirectSse
from server_core.sse.direct import DirectEvent
from server_core.validation import parse_json_body
from server_core.web.auth import ApiKeyCheck
from server_core.web.drain import InFlight
from server_core.web.responses import send_json, write_error

__all__ = ["READY_HEADER", "ModelLoader", "PreloadService", "StatusRoutes"]

log = Logger()

READY_HEADER = b"x-server-core-ready"
_LOADED = "loaded"


class StatusRoutes:
    """Status handlers; ``OpenAIRoutes`` routes to them (one Klein app serves all)."""

    def __init__(
        self,
        metrics: ServerMetrics | None,
        *,
        router: IRouterState,
        in_flight: InFlight,
        check_auth: ApiKeyCheck,
        clock: IReactorTime,
        keepalive_interval: float | None,
        metrics_public: bool = False,
        loader: ModelLoader | None = None,
        child_metrics: ChildMetrics | None = None,
    ) -> None:
        self._loader = loader
        self._children = child_metrics
        self._metrics = metrics
        self._router = router
        self._in_flight = in_flight
        self._check_auth = check_auth
        self._clock = clock
        self._keepalive = keepalive_interval
        self._public = metrics_public

    async def metrics(self, request: Request) -> bytes | None:
        """The Prometheus exposition (text format 0.0.4): ours, then the children's."""
        try:
            if not self._public:
                self._check_auth(request)
        except ServerCoreError as error:
            return write_error(request, error)
        body = self._metrics.render() if self._metrics is not None else b""
        if self._children is not None:
            body += await self._children.render()
        request.setHeader(b"content-type", CONTENT_TYPE.encode("ascii"))
        return body

    def ready(self, request: Request) -> bytes | None:
        """Whether this node should get traffic (see module doc); the key is needed only
        to ask about one model."""
        if self._in_flight.closing:
            return send_json(request, {"status": "draining"}, 503)
        wanted = request.args.get(b"model")
        if not wanted:
            if not self._router.list_models():
                return send_json(request, {"status": "unavailable"}, 503)
            return send_json(request, {"status": "ready"})
        model = wanted[0].decode("utf-8", "replace")
        try:
            self._check_auth(request)  # which models exist is the key holders' business
            entry = self._router.get_model(model)
            if entry is None:
                raise AliasNotFound(model)
        except ServerCoreError as error:
            return write_error(request, error)
        status = entry.get("status")
        value = status.get("value") if isinstance(status, dict) else None
        if value is None or value == _LOADED:
            return send_json(request, {"status": "ready", "model": model})
        request.setHeader(READY_HEADER, b"after-start")
        return send_json(request, {"status": "ready", "model": model, "after_start": value})

    async def events(self, request: Request) -> bytes | None:
        """The live events as SSE, each ``event: TYPE`` with its JSON ``data``."""
        try:
            self._check_auth(request)
        except ServerCoreError as error:
            return write_error(request, error)
        if self._metrics is None:
            return write_error(request, AliasNotFound("events"))
        subscription = self._metrics.subscribe()
        snapshot = [
            {"type": "state", "alias": entry["id"], "status": entry["status"]["value"]}
            for entry in self._router.list_models()
            if isinstance(entry.get("status"), dict)
        ]
        stream = DirectSse(
            request,
            _as_events(snapshot, subscription),
            clock=self._clock,
            keepalive_interval=self._keepalive,
            send_done=False,
        )
        try:
            await stream.run()
        finally:
            subscription.close()
        return None

    async def load(self, request: Request) -> bytes | None:
        """Start one managed model now; answers when it is ready to serve."""
        try:
            self._check_auth(request)
            if self._loader is None:
                raise NotFound(
                    "This server manages no llama-server processes.", code="no_managed_models"
                )
            name = await self._loader.load(_alias_in(request))
        except ServerCoreError as error:
            return write_error(request, error)
        return send_json(request, {"loaded": name, "status": {"value": _LOADED}})


class ModelLoader:
    """Starts a managed model ahead of its requests (see module doc)."""

    def __init__(self, context: ISharedContext, aliases: IAliasStore) -> None:
        self._context = context
        self._aliases = aliases

    async def load(self, name: str) -> str:
        """Start (or join the start of) ``name``'s server; the alias name once ready."""
        target = self._aliases.resolve(name)
        if not isinstance(target, LocalAlias):
            raise BadRequest(
                f"'{name}' is not a managed model; there is nothing to start.",
                param="alias",
                code="not_managed",
            )
        lease: Any = await self._context.acquire(target)
        lease.release()
        return target.name


class PreloadService(Service):
    """Starts ``llama_server.preload``'s models when the server starts."""

    def __init__(self, loader: ModelLoader, names: tuple[str, ...]) -> None:
        self._loader = loader
        self._names = names

    def startService(self) -> None:
        super().startService()
        for name in self._names:
            started = defer.ensureDeferred(self._loader.load(name))
            started.addCallbacks(
                lambda alias: log.info("preloaded {alias}", alias=alias),
                lambda failure, name=name: log.warn(
                    "preloading {alias} failed: {why}", alias=name, why=failure.getErrorMessage()
                ),
            )


def _alias_in(request: Request) -> str:
    assert request.content is not None
    body = parse_json_body(request.content.read())
    alias = body.get("alias", body.get("model"))
    if not isinstance(alias, str) or not alias:
        raise BadRequest("'alias' must name a managed model.", param="alias")
    return alias


async def _as_events(
    first: list[dict[str, Any]], subscription: Subscription
) -> AsyncIterator[DirectEvent]:
    for event in first:
        yield DirectEvent(event, event=event["type"])
    async for event in subscription:
        yield DirectEvent(event, event=str(event.get("type", "message")))
