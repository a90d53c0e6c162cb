"""DefaultRouterState: model field -> alias -> local llama-server or remote server.

The only object route handlers talk to. It resolves the client's ``model``, fills
alias ``request_params`` the client did not set, takes a lease on a managed server
when the alias is local, sends the request upstream, and delivers the reply to the
client (``server_core.reply``). The lease travels with the reply and is released only
when the response to the client has ended.

A request naming no ``model`` goes to the store's default model (``server.default_model``,
or the only alias); without one it is the 400 it always was. Native llama-server routes
(``/completion``, ``/tokenize``, ``/props``, ...) take the same path with the upstream's
own URL path instead of one under ``/v1``; their streams end with ``"stop": true``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from twisted.internet import defer
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.server import Request
from zope.interface import implementer

from server_core.aliases import LocalAlias, RemoteTarget, merge_request_params
from server_core.errors import BadRequest, ContextError
from server_core.interfaces import IAliasStore, IRouterState, ISharedContext
from server_core.reply import ReplyDelivery, ReplyTracker, respond_via
from server_core.sse.dialects import CHAT, MESSAGES, NATIVE, RESPONSES, StreamDialect
from server_core.sse.loading import LoadingPrelude
from server_core.template_check import ChatTemplateBroken
from server_core.upstream import UpstreamClient
from server_core.validation import missing_model

__all__ = ["DefaultRouterState", "UpstreamReply", "respond_via"]


def _noop() -> None:
    pass


@dataclass
class UpstreamReply:
    """An upstream response whose headers have arrived, plus its lease."""

    response: IResponse
    upstream_name: str
    _release: Callable[[], None] = field(default=_noop, repr=False)
    model_name: str | None = field(default=None, kw_only=True)
    """The model name the client asked for; replies that name another are rewritten."""
    alias: str | None = field(default=None, kw_only=True)
    """The alias that answered (``X-Served-By``), whatever name the client used."""
    dialect: StreamDialect = field(default=CHAT, kw_only=True)
    """The stream dialect of the reply: what its complete ending and its error event are."""

    def release(self) -> None:
        """Give back the lease (idempotent)."""
        release, self._release = self._release, _noop
        release()


# Native routes that generate: alias request_params apply, and their streams end with the
# event carrying ``"stop": true`` (llama-server's /completion stream has no [DONE]).
_NATIVE_GENERATION = frozenset({"/completion", "/completions", "/infill"})
_OPENAI_UNPREFIXED = frozenset({"/completions", "/embeddings"})


# The stream dialect of each OpenAI-style endpoint (``sse.dialects``); native generation
# routes stream in the native one.
_DIALECTS: dict[str, StreamDialect] = {"/responses": RESPONSES, "/messages": MESSAGES}
# Endpoints whose prompt is built by the chat template: refused when it is broken.
_TEMPLATED = frozenset({"/chat/completions", "/responses", "/messages"})
# Endpoints whose ``"stream": true`` is an SSE stream (Ollama's NDJSON is not one of them).
_SSE_STREAMS = frozenset({"/chat/completions", "/completions", "/responses", "/messages"})


def _dialect(endpoint: str, native: _Native | None) -> StreamDialect:
    if native is not None:
        return NATIVE if native.path in _NATIVE_GENERATION else CHAT
    return _DIALECTS.get(endpoint, CHAT)


@dataclass(frozen=True)
class _Native:
    """How a native request goes upstream: its method, path and query string."""

    path: str
    method: str = "POST"
    query: bytes = b""


@implementer(IRouterState)
class DefaultRouterState:
    """Resolves models through an alias store and forwards requests."""

    def __init__(
        self,
        aliases: IAliasStore,
        client: UpstreamClient,
        context: ISharedContext | None = None,
        delivery: ReplyDelivery | None = None,
    ) -> None:
        self._aliases = aliases
        self._client = client
        self._context = context
        self._delivery = delivery

    async def respond(
        self, request: Request, endpoint: str, body: dict[str, Any], tracker: ReplyTracker
    ) -> bytes | None:
        """Answer ``request`` with what ``endpoint`` of its model's server replies."""
        body = self.with_model(body)
        prelude = self._prelude(request, body, endpoint in _SSE_STREAMS, _dialect(endpoint, None))
        forward = partial(self._forward, native=None, prelude=prelude)
        return await respond_via(
            forward, self._delivery_or_fail(), request, endpoint, body, tracker, prelude=prelude
        )

    async def respond_native(
        self,
        request: Request,
        path: str,
        body: dict[str, Any],
        tracker: ReplyTracker,
        *,
        method: str = "POST",
    ) -> bytes | None:
        """Answer ``request`` with what llama-server's own ``path`` replies (see module doc)."""
        native = _Native(path, method, _query(request))
        body = self.with_model(body)
        streams = path in _NATIVE_GENERATION
        prelude = self._prelude(request, body, streams, _dialect(path, native))

        def forward(_: str, outgoing: dict[str, Any], headers: Headers | None) -> Any:
            return self._forward(native.path, outgoing, headers, native, prelude)

        return await respond_via(
            forward, self._delivery_or_fail(), request, path, body, tracker, prelude=prelude
        )

    def _prelude(
        self, request: Request, body: dict[str, Any], streams: bool, dialect: StreamDialect
    ) -> LoadingPrelude | None:
        """Comments for a long wait on the model, for a request whose answer is SSE."""
        if not streams or body.get("stream") is not True:
            return None
        return self._delivery_or_fail().prelude(request, dialect)

    async def respond_raw(
        self, request: Request, model: str, path: str, body: bytes | None, tracker: ReplyTracker
    ) -> None:
        """Pass ``request`` through to ``path`` of ``model``'s server as it is, holding a
        lease on a managed one until the response has been relayed."""
        delivery = self._delivery_or_fail()
        target = self._aliases.resolve(model)
        query = _query_suffix(_query(request))
        method = request.method.decode("ascii")
        if isinstance(target, RemoteTarget):
            if target.kind == "api":
                raise BadRequest(
                    f"'{model}' is a remote API; /upstream/ reaches llama-server models only.",
                    param="model",
                    code="unsupported_route",
                )
            url = f"{target.base_url.removesuffix('/v1')}/{path}{query}"
            response = await tracker.waiting(
                defer.ensureDeferred(self._raw(method, url, body, request, target.name))
            )
            await delivery.deliver_raw(request, response, tracker)
            return
        lease = await tracker.waiting(self._lease(target))
        try:
            url = f"{lease.base_url}/{path}{query}"
            response = await tracker.waiting(
                defer.ensureDeferred(self._raw(method, url, body, request, target.name))
            )
            await delivery.deliver_raw(request, response, tracker)
        finally:
            lease.release()

    def _raw(self, method: str, url: str, body: bytes | None, request: Request, name: str) -> Any:
        return self._client.send_raw(
            method,
            url,
            body,
            client_headers=request.requestHeaders,
            upstream_name=f"model '{name}'",
        )

    def _lease(
        self, target: LocalAlias, prelude: LoadingPrelude | None = None, model: str | None = None
    ) -> defer.Deferred[Any]:
        context = self._context
        if context is None:
            raise ContextError(
                f"The model '{target.name}' runs on a managed llama-server, and this server "
                "has no llama-server executable configured (llama_server.executable)."
            )
        lease: defer.Deferred[Any] = context.acquire(target)
        if prelude is not None:

            def state() -> str | None:
                process = context.process_for(target.name)
                return None if process is None else str(process.state)

            lease = prelude.watch(lease, target.name, model=model, progress=state)
        return lease

    def with_model(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body``, naming the default model when it names none (or unchanged)."""
        if body.get("model") is not None:
            return body
        default = self._aliases.default_model()
        return body if default is None else {**body, "model": default}

    def _delivery_or_fail(self) -> ReplyDelivery:
        if self._delivery is None:
            raise RuntimeError("this router was built without a ReplyDelivery")
        return self._delivery

    @property
    def aliases(self) -> IAliasStore:
        """The alias store this router resolves model names with."""
        return self._aliases

    @property
    def client(self) -> UpstreamClient:
        return self._client

    @property
    def context(self) -> ISharedContext | None:
        return self._context

    async def forward(
        self, endpoint: str, body: dict[str, Any], headers: Headers | None = None
    ) -> UpstreamReply:
        """Send ``body`` to ``endpoint`` (e.g. ``/chat/completions``) of its model's server."""
        return await self._forward(endpoint, self.with_model(body), headers, None)

    async def _forward(
        self,
        endpoint: str,
        body: dict[str, Any],
        headers: Headers | None,
        native: _Native | None,
        prelude: LoadingPrelude | None = None,
    ) -> UpstreamReply:
        if body.get("model") is None:
            raise missing_model()
        wanted = str(body["model"])
        target = self._aliases.resolve(wanted)
        dialect = _dialect(endpoint, native)
        if isinstance(target, RemoteTarget):
            outgoing = merge_request_params(body, target.request_params)
            if target.upstream_model:
                outgoing["model"] = target.upstream_model
            name = f"upstream '{target.name}'"
            url = target.base_url + endpoint if native is None else _remote_native(target, native)
            response = await self._send(url, outgoing, headers, name, native, target)
            return UpstreamReply(
                response, name, model_name=wanted, alias=target.name, dialect=dialect
            )
        assert isinstance(target, LocalAlias)
        lease: Any = await self._lease(target, prelude, wanted)
        if endpoint in _TEMPLATED and native is None and lease.chat_template_error:
            lease.release()
            raise ChatTemplateBroken(target.name)
        try:
            generation = native is None or native.path in _NATIVE_GENERATION
            outgoing = merge_request_params(body, target.request_params) if generation else body
            outgoing = {**outgoing, "model": target.name}
            name = f"model '{target.name}'"
            if native is None:
                url = f"{lease.base_url}/v1{endpoint}"
            else:
                url = lease.base_url + native.path + _query_suffix(native.query)
            response = await self._send(url, outgoing, headers, name, native, None)
        except BaseException:
            lease.release()
            raise
        return UpstreamReply(
            response, name, lease.release, model_name=wanted, alias=target.name, dialect=dialect
        )

    async def _send(
        self,
        url: str,
        body: dict[str, Any],
        headers: Headers | None,
        name: str,
        native: _Native | None,
        remote: RemoteTarget | None,
    ) -> IResponse:
        """One request upstream: a GET for native GET routes, else the JSON POST."""
        api_key = remote.api_key if remote is not None else None
        if native is not None and native.method == "GET":
            return await self._client.get(url, api_key=api_key, upstream_name=name)
        return await self._client.post_json(
            url,
            body,
            client_headers=headers,
            api_key=api_key,
            upstream_name=name,
            remote_api=remote is not None and remote.kind == "api",
        )

    model_status: Callable[[str], dict[str, Any]] | None = None
    """A managed alias's status (``metrics.ModelStatus.of``), set by composition; entries
    of managed models then carry ``status``: ``{"value": loaded|loading|unloaded|failed}``
    (with ``reason`` when failed), as llama.cpp's router reports it."""

    def list_models(self) -> list[dict[str, Any]]:
        return [self._with_status(entry) for entry in self._aliases.list_models()]

    def get_model(self, model_id: str) -> dict[str, Any] | None:
        for entry in self._aliases.list_models():
            if entry.get("id") == model_id:
                return self._with_status(entry)
        return None

    def _with_status(self, entry: dict[str, Any]) -> dict[str, Any]:
        status = self.model_status
        if status is None or self._context is None:
            return entry
        try:
            target = self._aliases.resolve(str(entry.get("id")))
        except Exception:
            return entry
        if not isinstance(target, LocalAlias):
            return entry
        return {**entry, "status": status(target.name)}

    async def close(self) -> None:
        if self._context is not None:
            stopped: Any = self._context.close()
            await stopped
        await self._client.close()


def _query(request: Request) -> bytes:
    """The raw query string of ``request`` (``fail_on_no_slot=1``), passed on as sent."""
    uri: bytes = request.uri or b""
    return uri.partition(b"?")[2]


def _query_suffix(query: bytes) -> str:
    return "?" + query.decode("ascii", "replace") if query else ""


def _remote_native(target: RemoteTarget, native: _Native) -> str:
    """A native path on a server someone else runs: under its root, not its ``/v1``.

    An API alias has only its ``/v1`` root: ``/v1/...`` paths and the un-prefixed OpenAI
    ones (an SDK pointed at our root) reach it under that root; others are a 400.
    """
    if target.kind == "api":
        if native.path in _OPENAI_UNPREFIXED:
            return target.base_url + native.path + _query_suffix(native.query)
        if not native.path.startswith("/v1/"):
            raise BadRequest(
                f"The model '{target.name}' is served by a remote API, which has no "
                f"llama-server route {native.path}; use a llama-server model.",
                param="model",
                code="unsupported_route",
            )
        return target.base_url + native.path[len("/v1") :] + _query_suffix(native.query)
    root = target.base_url.removesuffix("/v1")
    return root + native.path + _query_suffix(native.query)
