"""Composition: the whole server built from a ``Config``, as the twistd plugin serves it.

``make_service`` wires the layers together (web -> router -> shared context -> processes
and upstream client) into one ``MultiService``: the drain, then the listener. Before
that it refuses a network address without keys (``config.exposure``) and reaps the
children a killed predecessor left; the Klein resource is served behind
``web.browser_guard``. Nothing here holds behaviour of its own; each piece lives in its
module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from server_core.admin import AdminApi
from server_core.aliases import LocalAlias
from server_core.config import DEFAULT_EXECUTABLE, Config
from server_core.config.endpoints import with_backlog
from server_core.config.exposure import (
    allowed_hosts,
    listen_address,
    unauthenticated_refusal,
    unauthenticated_warning,
)
from server_core.errors import ConfigError, ContextError
from server_core.llama_install import INSTALL_HINT, find_llama_server
from server_core.metrics import ModelStatus, RecordingResource, RouteLabels, ServerMetrics
from server_core.metrics.children import MAX_BYTES, ChildMetrics
from server_core.metrics.logs import JsonRequestLog
from server_core.process import LlamaServerProcess, reap_orphans
from server_core.reply import ReplyDelivery
from server_core.router_state import DefaultRouterState
from server_core.shared_context import ContextLimits, DefaultSharedContext
from server_core.template_check import ChatTemplateProbe
from server_core.upstream import UpstreamClient
from server_core.upstream.fetch import fetch_body
from server_core.web import HEADER_TIMEOUT, DrainService, GuardedSite, Listener, OpenAIRoutes
from server_core.web.browser_guard import BrowserGuard, HostCheck
from server_core.web.status_routes import ModelLoader, PreloadService

__all__ = [
    "build_child_metrics",
    "build_context",
    "build_metrics",
    "build_router",
    "check_exposure",
    "make_service",
    "reap_previous_run",
]

log = Logger()


def build_context(
    config: Config, reactor: Any, client: UpstreamClient
) -> DefaultSharedContext | None:
    """The shared context for managed aliases, or None when the config has none."""
    if not config.aliases.local_aliases():
        return None
    llama = config.llama

    def make_process(alias: LocalAlias, on_state: Callable[[Any, str, str], None]) -> Any:
        executable, base_args = llama.command_for(alias.exec_variant)
        found = find_llama_server(None if executable == DEFAULT_EXECUTABLE else executable)
        if found is None:
            raise ContextError(
                f"The model '{alias.name}' needs llama-server, which is not installed here. "
                f"The server's operator can install it with {INSTALL_HINT}."
            )
        executable = found
        if llama.child_metrics:  # first: a later --metrics in the args merges into it
            base_args = ("--metrics", *base_args)
        # The process merges the alias's context_params over these flags itself.
        return LlamaServerProcess(
            alias,
            executable,
            base_args,
            reactor=reactor,
            start_timeout=llama.start_timeout,
            stop_grace=llama.stop_grace,
            liveness_interval=llama.liveness_interval,
            liveness_timeout=llama.liveness_timeout,
            liveness_misses=llama.liveness_misses,
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
            max_wait=llama.max_wait,
            min_resident=llama.min_resident,
        ),
        template_probe=ChatTemplateProbe(client, reactor),
    )


def build_router(config: Config, reactor: Any) -> DefaultRouterState:
    """The router: alias store, upstream client, shared context, reply delivery."""
    client = UpstreamClient(reactor, config.server.upstream)
    context = build_context(config, reactor, client)
    delivery = ReplyDelivery(
        reactor,
        keepalive_interval=config.server.keepalive_interval,
        idle_timeout=config.server.upstream.idle_timeout,
    )
    return DefaultRouterState(config.aliases, client, context=context, delivery=delivery)


def build_metrics(config: Config, reactor: Any, router: DefaultRouterState) -> ServerMetrics:
    """The metrics, listening to the shared context; managed models' status on ``/v1/models``."""
    request_log = JsonRequestLog() if config.server.json_logs else None
    metrics = ServerMetrics(reactor, request_log=request_log)
    context = router.context
    if context is not None:
        names = [alias.name for alias in config.aliases.local_aliases()]
        status = ModelStatus(metrics, reactor, names)
        context.add_state_listener(status)
        metrics.watch(status, context.running)
        router.model_status = status.of
    return metrics


def build_child_metrics(
    config: Config, reactor: Any, router: DefaultRouterState
) -> ChildMetrics | None:
    """The managed children's ``llamacpp:*`` metrics for ``/metrics``, unless turned off."""
    context = router.context
    if context is None or not config.llama.child_metrics:
        return None
    client = router.client

    def fetch(url: str) -> Awaitable[bytes]:
        return fetch_body(client, url, limit=MAX_BYTES, clock=reactor)

    return ChildMetrics(context, fetch, reactor)


# POST routes that do not ask a model; every other POST route does, and /upstream/.
_NOT_MODEL_POSTS = frozenset({"/unload", "/load"})


def route_labels(rules: Iterable[Any]) -> RouteLabels:
    """The metrics' route labels: every Klein rule, and which of them ask a model."""
    rules = list(rules)
    asks_model = [
        r.rule
        for r in rules
        if ("POST" in (r.methods or ()) and r.rule not in _NOT_MODEL_POSTS)
        or r.rule.startswith("/upstream/")
    ]
    return RouteLabels([r.rule for r in rules], asks_model)


def reap_previous_run() -> None:
    """Stop llama-servers a SIGKILLed server_core left running, whatever this config holds.

    A config without managed aliases now still ends the old children: they hold memory,
    GPU and ports, and nothing else would ever stop them.
    """
    reaped = reap_orphans()
    if reaped:
        log.warn("stopped {n} llama-server processes left by a previous run", n=len(reaped))


def check_exposure(config: Config, listen: str) -> None:
    """Refuse (``ConfigError``) a network address without keys; warn when allowed anyway."""
    refusal = unauthenticated_refusal(config.server, listen)
    if refusal is not None:
        raise ConfigError(refusal, file=config.source)
    warning = unauthenticated_warning(config.server, listen)
    if warning is not None:
        log.warn("{warning}", warning=warning)


def guarded_resource(config: Config, listen: str, resource: Any) -> BrowserGuard:
    """``resource`` behind the browser checks (Host, Origin, Content-Type)."""
    hosts = HostCheck(
        allowed_hosts(config.server, listen),
        ip_literals=listen_address(listen).every_interface,
    )
    return BrowserGuard(resource, hosts=hosts, cors_origins=config.server.cors_origins)


def make_service(config: Config, reactor: Any, listen: str | None = None) -> MultiService:
    """The whole server as one MultiService (what the twistd plugin returns).

    Raises ``ConfigError`` when ``listen`` (default ``server.listen``) is reachable from
    the network and the configuration has no API keys and does not allow that.
    """
    listen = listen or config.server.listen
    check_exposure(config, listen)
    # Children of a server_core that was SIGKILLed may still run: stop them first.
    reap_previous_run()
    router = build_router(config, reactor)
    admin = None
    if router.context is not None:
        local_names = [a.name for a in config.aliases.local_aliases()]
        admin = AdminApi(router.context, lambda: local_names)
    metrics = build_metrics(config, reactor, router)
    loader = None if router.context is None else ModelLoader(router.context, config.aliases)
    routes = OpenAIRoutes(
        router,
        admin=admin,
        clock=reactor,
        api_keys=config.server.api_keys,
        keepalive_interval=config.server.keepalive_interval,
        metrics=metrics,
        metrics_public=config.server.metrics_public,
        loader=loader,
        ollama=config.ollama,
        idle_timeout=config.server.upstream.idle_timeout,
        child_metrics=build_child_metrics(config, reactor, router),
    )
    recorded = RecordingResource(
        guarded_resource(config, listen, routes.resource()),
        metrics,
        clock=reactor,
        routes=route_labels(routes.app.url_map.iter_rules()),
        node_name=config.server.node_name,
    )
    site = GuardedSite(
        recorded,
        max_body_bytes=config.server.max_body_bytes,
        header_timeout=HEADER_TIMEOUT,
        reactor=reactor,
    )
    site.noisy = False
    if not config.server.access_log:
        # Off unless asked for: a line per request costs more than all the metrics, and
        # ``json_logs`` says what it would say, and more.
        site.log = lambda request: None  # type: ignore[method-assign]
    top = MultiService()
    drain = DrainService(routes.in_flight, router, site, config.server.drain_timeout, reactor)
    drain.setServiceParent(top)
    if loader is not None and config.llama.preload:
        PreloadService(loader, config.llama.preload).setServiceParent(top)
    Listener(serverFromString(reactor, with_backlog(listen)), site).setServiceParent(top)
    top.routes = routes  # type: ignore[attr-defined]
    top.metrics = metrics  # type: ignore[attr-defined]
    top.site = site  # type: ignore[attr-defined]
    return top
