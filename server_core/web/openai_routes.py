"""The HTTP surface: a Klein app bound to an object that holds an ``IRouterState``.

Handlers validate and delegate: the router answers (``IRouterState.respond``), the admin
handlers answer through ``AdminApi``. Every handler catches every error itself and answers
with an OpenAI-shaped JSON body, so Klein's HTML error page can never reach a client,
least of all inside a stream. Nothing here reads an upstream body or touches a process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from klein import Klein
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.server import Request
from werkzeug.exceptions import MethodNotAllowed, NotFound

from server_core._twisted_compat import request_disconnected
from server_core.admin import AdminApi
from server_core.config.settings import OllamaSettings
from server_core.errors import (
    AliasNotFound,
    ServerCoreError,
    error_body,
    internal_error,
)
from server_core.errors import NotFound as RouteNotFound
from server_core.interfaces import IRouterState
from server_core.metrics import ServerMetrics
from server_core.metrics.children import ChildMetrics
from server_core.validation import (
    parse_json_body,
    validate_chat,
    validate_completion,
    validate_embeddings,
    validate_messages,
    validate_native,
    validate_responses,
)
from server_core.web.admin_routes import AdminRoutes
from server_core.web.auth import ApiKeyCheck
from server_core.web.drain import InFlight, shutting_down
from server_core.web.native_routes import NATIVE_GET, NATIVE_POST, query_model
from server_core.web.ollama_routes import (
    OLLAMA_ROUTES,
    OllamaRoutes,
    ollama_handler,
    write_ollama_error,
)
from server_core.web.responses import (
    JSON,
    send_error,
    send_json,
    write_anthropic_error,
    write_error,
)
from server_core.web.status_routes import ModelLoader, StatusRoutes
from server_core.web.ui import StatusPage, status_page

__all__ = ["OpenAIRoutes"]

Validator = Callable[[dict[str, Any]], None]
ErrorWriter = Callable[[Request, ServerCoreError], bytes | None]
# Anthropic's routes answer errors in Anthropic's shape; its SDK parses no other.
_ANTHROPIC_ROUTES = frozenset({"/v1/messages/count_tokens"})
Handler = Callable[[Any, Request], Awaitable[bytes | None]]


_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _no_validation(body: dict[str, Any]) -> None:
    """``/upstream/``: the body is the upstream's business, passed on unread."""


def _native(path: str, method: str) -> Handler:
    """The handler of one native llama-server route (``web.native_routes``)."""

    anthropic = path in _ANTHROPIC_ROUTES
    errors = write_anthropic_error if anthropic else write_error
    # count_tokens counts a Messages request: it is refused where /v1/messages would be.
    validate = validate_messages if anthropic else validate_native

    async def native(self: OpenAIRoutes, request: Request) -> bytes | None:
        return await self._proxy(request, path, validate, native=method, errors=errors)

    native.__name__ = native.__qualname__ = f"native {method} {path}"
    return native


class OpenAIRoutes:
    """The OpenAI-compatible routes of server_core, plus health and admin."""

    app = Klein()

    def __init__(
        self,
        router: IRouterState,
        *,
        clock: IReactorTime,
        api_keys: Sequence[str] = (),
        keepalive_interval: float | None = 15.0,
        admin: AdminApi | None = None,
        metrics: ServerMetrics | None = None,
        metrics_public: bool = False,
        loader: ModelLoader | None = None,
        ollama: OllamaSettings | None = None,
        idle_timeout: float | None = 300.0,
        child_metrics: ChildMetrics | None = None,
    ) -> None:
        self._router = router
        self._check_auth = ApiKeyCheck(api_keys)
        self._admin = AdminRoutes(
            admin, check_auth=self._check_auth, clock=clock, keepalive_interval=keepalive_interval
        )
        self.in_flight = InFlight()
        self._ui: StatusPage | None = None
        self._ui_sources = (admin, metrics, clock)
        ollama = ollama or OllamaSettings()
        self.ollama = OllamaRoutes(
            router,
            clock=clock,
            check_auth=self._check_auth,
            in_flight=self.in_flight,
            idle_timeout=idle_timeout,
            max_keep_alive=ollama.max_keep_alive,
            version=ollama.version,
        )
        self._status = StatusRoutes(
            metrics,
            router=router,
            in_flight=self.in_flight,
            check_auth=self._check_auth,
            clock=clock,
            keepalive_interval=keepalive_interval,
            metrics_public=metrics_public,
            loader=loader,
            child_metrics=child_metrics,
        )

    def resource(self) -> Any:
        """The twisted.web resource to serve."""
        return self.app.resource()

    # -- errors Klein itself would render as HTML ------------------------------

    @app.handle_errors(NotFound)
    def _not_found(self, request: Any, failure: Failure) -> bytes | None:
        path = request.path.decode("utf-8", "replace")[:200]
        if path.startswith("/api/"):  # Ollama's clients read only Ollama's shape
            return write_ollama_error(request, RouteNotFound(f"Unknown route: {path}"))
        return send_error(
            request, 404, error_body(f"Unknown route: {path}", "not_found_error", "not_found")
        )

    @app.handle_errors(MethodNotAllowed)
    def _bad_method(self, request: Any, failure: Failure) -> bytes | None:
        method = request.method.decode("ascii", "replace")
        message = f"Method {method} is not allowed on this route."
        if request.path.startswith(b"/api/"):
            return write_ollama_error(request, ServerCoreError(message, status=405))
        body = error_body(message, "invalid_request_error", "method_not_allowed")
        return send_error(request, 405, body)

    @app.handle_errors(Exception)
    def _unexpected(self, request: Any, failure: Failure) -> bytes | None:
        return write_error(request, internal_error(failure, "route"))

    # -- routes ------------------------------------------------------------------

    @app.route("/health", methods=["GET"])
    @app.route("/v1/health", methods=["GET"])
    def health(self, request: Request) -> bytes:
        request.setHeader(b"content-type", JSON)
        return b'{"status":"ok"}'

    @app.route("/v1/models", methods=["GET"])
    @app.route("/models", methods=["GET"])
    def models(self, request: Request) -> bytes | None:
        try:
            self._check_auth(request)
            data = self._router.list_models()
        except ServerCoreError as error:
            return write_error(request, error)
        return send_json(request, {"object": "list", "data": data})

    @app.route("/v1/models/<path:model_id>", methods=["GET"])
    def model(self, request: Request, model_id: str) -> bytes | None:
        try:
            self._check_auth(request)
            entry = self._router.get_model(model_id)
            if entry is None:
                raise AliasNotFound(model_id)
        except ServerCoreError as error:
            return write_error(request, error)
        return send_json(request, entry)

    @app.route("/v1/chat/completions", methods=["POST"])
    @app.route("/chat/completions", methods=["POST"])
    async def chat_completions(self, request: Request) -> bytes | None:
        return await self._proxy(request, "/chat/completions", validate_chat)

    @app.route("/v1/completions", methods=["POST"])
    async def completions(self, request: Request) -> bytes | None:
        return await self._proxy(request, "/completions", validate_completion)

    @app.route("/v1/embeddings", methods=["POST"])
    async def embeddings(self, request: Request) -> bytes | None:
        return await self._proxy(request, "/embeddings", validate_embeddings)

    @app.route("/v1/responses", methods=["POST"])
    @app.route("/responses", methods=["POST"])
    async def responses(self, request: Request) -> bytes | None:
        return await self._proxy(request, "/responses", validate_responses)

    @app.route("/v1/messages", methods=["POST"])
    async def messages(self, request: Request) -> bytes | None:
        return await self._proxy(
            request, "/messages", validate_messages, errors=write_anthropic_error
        )

    # llama-server's own routes, and its un-prefixed /completions and /embeddings.
    for _path in NATIVE_POST:
        app.route(_path, methods=["POST"], endpoint=f"native POST {_path}")(_native(_path, "POST"))
    for _path in NATIVE_GET:
        app.route(_path, methods=["GET"], endpoint=f"native GET {_path}")(_native(_path, "GET"))
    del _path
    # Ollama's API (web.ollama_routes), answered by self.ollama.
    for _route, _methods, _operation in OLLAMA_ROUTES:
        app.route(_route, methods=list(_methods), endpoint=f"ollama {_route}")(
            ollama_handler(_route, _operation)
        )
    del _route, _methods, _operation

    @app.route("/upstream/<string:model>/<path:path>", methods=_ANY_METHOD)
    async def upstream(self, request: Request, model: str, path: str) -> bytes | None:
        """Raw pass-through to one alias's llama-server (behind the API key)."""
        return await self._proxy(request, path, _no_validation, raw=model)

    @app.route("/running", methods=["GET"])
    def running(self, request: Request) -> bytes | None:
        return self._admin.running(request)

    @app.route("/unload", methods=["POST"])
    async def unload(self, request: Request) -> bytes | None:
        return await self._admin.unload(request)

    @app.route("/logs/<string:alias>", methods=["GET"])
    async def logs(self, request: Request, alias: str) -> bytes | None:
        return await self._admin.logs(request, alias)

    # -- observability (web.status_routes) ---------------------------------------------

    @app.route("/metrics", methods=["GET"])
    async def metrics(self, request: Request) -> bytes | None:
        return await self._status.metrics(request)

    @app.route("/ready", methods=["GET"])
    def ready(self, request: Request) -> bytes | None:
        return self._status.ready(request)

    @app.route("/api/events", methods=["GET"])
    async def events(self, request: Request) -> bytes | None:
        return await self._status.events(request)

    @app.route("/load", methods=["POST"])
    async def load(self, request: Request) -> bytes | None:
        return await self._status.load(request)

    # -- the status page (web.ui) ---------------------------------------------------------

    @app.route("/ui", methods=["GET"])
    def ui(self, request: Request) -> bytes | None:
        return self._status_page().page(request)

    @app.route("/ui/<string:asset>", methods=["GET"])
    def ui_asset(self, request: Request, asset: str) -> bytes | None:
        return self._status_page().asset(request, asset)

    def _status_page(self) -> StatusPage:
        """Built at first use: only then does it listen to the events (``web.ui``)."""
        if self._ui is None:
            admin, metrics, clock = self._ui_sources
            self._ui = status_page(
                self._router, self._check_auth, admin=admin, metrics=metrics, clock=clock
            )
        return self._ui

    # -- the proxied routes --------------------------------------------------------

    async def _proxy(
        self,
        request: Request,
        endpoint: str,
        validate: Validator,
        *,
        native: str | None = None,
        raw: str | None = None,
        errors: ErrorWriter = write_error,
    ) -> bytes | None:
        """Validate, then delegate; ``native`` is the method of a llama-server native route,
        ``raw`` the model of an ``/upstream/`` pass-through."""
        if self.in_flight.closing:
            # Keep-alive connections may still send requests during the drain.
            request.setHeader(b"connection", b"close")
            return errors(request, shutting_down())
        self.in_flight.enter()
        try:
            self._check_auth(request)
            assert request.content is not None
            if raw is not None:
                payload = request.content.read()
                await self._router.respond_raw(
                    request, raw, endpoint, payload or None, self.in_flight
                )
                return None
            if native == "GET":
                body = query_model(request)
            else:
                body = parse_json_body(request.content.read())
            validate(body)
            if native is None:
                return await self._router.respond(request, endpoint, body, self.in_flight)
            return await self._router.respond_native(
                request, endpoint, body, self.in_flight, method=native
            )
        except defer.CancelledError:
            if self.in_flight.closing and not request_disconnected(request):
                return errors(request, shutting_down())  # drain timeout, not the client
            return None  # the client left; nothing can be written any more
        except ServerCoreError as error:
            return errors(request, error)
        except Exception as exc:
            return errors(request, internal_error(exc, endpoint))
        finally:
            self.in_flight.leave()
