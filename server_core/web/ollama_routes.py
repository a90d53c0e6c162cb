"""Ollama's API over HTTP: ``/api/version``, ``/api/tags``, ``/api/chat``, ...

Handlers parse, check the API key and delegate to ``OllamaApi`` (``server_core.ollama``),
which reads the upstream replies; nothing here reads an upstream body. Every error is
answered in Ollama's shape, ``{"error": "..."}``, with its status: what Ollama's clients
parse. ``OpenAIRoutes`` registers ``OLLAMA_ROUTES`` on its Klein app and holds one
``OllamaRoutes`` as ``ollama``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.web.server import Request

from server_core._twisted_compat import request_disconnected
from server_core.errors import ServerCoreError, internal_error
from server_core.interfaces import IAliasStore, IRouterState, ISharedContext
from server_core.ollama.api import DEFAULT_VERSION, OllamaApi
from server_core.validation import parse_json_body
from server_core.web.auth import ApiKeyCheck
from server_core.web.drain import InFlight, shutting_down
from server_core.web.responses import JSON, send_error

__all__ = ["OLLAMA_ROUTES", "OllamaRoutes", "ollama_handler", "write_ollama_error"]

Handler = Callable[[Any, Request], Awaitable[bytes | None]]

# (path, methods, operation). Model management is refused: this server serves the
# models its configuration names, and nothing a client sends changes them.
OLLAMA_ROUTES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("/api/version", ("GET", "HEAD"), "version"),
    ("/api/tags", ("GET", "HEAD"), "tags"),
    ("/api/ps", ("GET",), "ps"),
    ("/api/show", ("POST",), "show"),
    ("/api/chat", ("POST",), "chat"),
    ("/api/generate", ("POST",), "generate"),
    ("/api/embed", ("POST",), "embed"),
    ("/api/embeddings", ("POST",), "embeddings"),
    ("/api/create", ("POST",), "refused"),
    ("/api/pull", ("POST",), "refused"),
    ("/api/push", ("POST",), "refused"),
    ("/api/copy", ("POST",), "refused"),
    ("/api/delete", ("DELETE", "POST"), "refused"),
    ("/api/blobs/<string:digest>", ("HEAD", "POST"), "refused"),
)

REFUSED_STATUS = 403
"""Model management: refused by this server's policy, not missing (a 404 reads as broken)."""


def write_ollama_error(request: Request, error: ServerCoreError) -> bytes | None:
    """``error`` as Ollama's ``{"error": "..."}``, or None once the body has started."""
    if request.startedWriting:
        return None  # the stream's relay ended it with its error line
    for name, value in error.headers.items():
        request.setHeader(name.encode("ascii"), value.encode("ascii"))
    body = json.dumps({"error": error.message}, ensure_ascii=False).encode("utf-8")
    return send_error(request, error.status, body)


def ollama_handler(path: str, operation: str) -> Handler:
    """The Klein endpoint of one Ollama route, bound to ``OpenAIRoutes.ollama``."""

    async def handler(self: Any, request: Request, **_: Any) -> bytes | None:
        routes: OllamaRoutes = self.ollama
        return await routes.handle(operation, request)

    handler.__name__ = handler.__qualname__ = f"ollama {path}"
    return handler


def _refused(operation_path: str) -> ServerCoreError:
    return ServerCoreError(
        f"{operation_path} is not available: this server serves the models its configuration "
        "names and does not create, pull, push, copy or delete models. /api/tags lists them; "
        "the server's operator adds models in its configuration file.",
        status=REFUSED_STATUS,
        type="permission_error",
        code="model_management_disabled",
    )


class OllamaRoutes:
    """The Ollama handlers (see module doc)."""

    def __init__(
        self,
        router: IRouterState,
        *,
        clock: IReactorTime,
        check_auth: ApiKeyCheck,
        in_flight: InFlight,
        idle_timeout: float | None = 300.0,
        max_keep_alive: float | None = None,
        version: str = DEFAULT_VERSION,
    ) -> None:
        self._check_auth = check_auth
        self._in_flight = in_flight
        self.api = OllamaApi(
            router,
            clock=clock,
            aliases=_alias_store(router),
            context=_context(router),
            idle_timeout=idle_timeout,
            max_keep_alive=max_keep_alive,
            version=version,
        )

    async def handle(self, operation: str, request: Request) -> bytes | None:
        """Answer one Ollama request; every failure in Ollama's error shape."""
        if self._in_flight.closing:
            request.setHeader(b"connection", b"close")
            return write_ollama_error(request, shutting_down())
        self._in_flight.enter()
        try:
            self._check_auth(request)
            request.setHeader(b"content-type", JSON)
            return await self._dispatch(operation, request)
        except defer.CancelledError:
            if self._in_flight.closing and not request_disconnected(request):
                return write_ollama_error(request, shutting_down())
            return None  # the client left; nothing can be written any more
        except ServerCoreError as error:
            return write_ollama_error(request, error)
        except Exception as exc:
            return write_ollama_error(request, internal_error(exc, f"ollama {operation}"))
        finally:
            self._in_flight.leave()

    async def _dispatch(self, operation: str, request: Request) -> bytes | None:
        api = self.api
        if operation == "version":
            return _encoded({"version": api.version})
        if operation == "tags":
            return _encoded(api.tags())
        if operation == "ps":
            return _encoded(api.ps())
        if operation == "refused":
            raise _refused(request.path.decode("utf-8", "replace")[:100])
        assert request.content is not None
        body = parse_json_body(request.content.read())
        if operation == "show":
            return _encoded(api.show(body))
        if operation == "chat":
            result: bytes | None = await api.chat(request, body, self._in_flight)
            return result
        if operation == "generate":
            result = await api.generate(request, body, self._in_flight)
            return result
        if operation == "embed":
            return await api.embed(request, body, self._in_flight)
        return await api.embeddings(request, body, self._in_flight)


def _encoded(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def _alias_store(router: IRouterState) -> IAliasStore | None:
    # The router holds the alias store; GGUF details need each alias's model file.
    store = getattr(router, "aliases", None)
    return store if IAliasStore.providedBy(store) else None


def _context(router: IRouterState) -> ISharedContext | None:
    context = getattr(router, "context", None)
    return context if ISharedContext.providedBy(context) else None
