"""OpenAI routes: a Klein app bound to an object that holds an ``IRouterState``.

Every handler catches every error itself and answers with an OpenAI-shaped JSON
body, so Klein's HTML error page can never reach a client, least of all inside a
stream. Handlers never import the process layer: they see only ``IRouterState``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from klein import Klein
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from werkzeug.exceptions import MethodNotAllowed, NotFound

from server_core.admin import AdminApi
from server_core.errors import (
    AliasNotFound,
    AuthenticationError,
    BadRequest,
    ContextError,
    ServerCoreError,
    UpstreamError,
    error_body,
    internal_error,
    normalize_upstream_error,
)
from server_core.errors import (
    NotFound as NotFoundError,
)
from server_core.interfaces import IRouterState
from server_core.sse import DirectSse, ForwardedSse
from server_core.upstream import BodyIncomplete, read_complete_body
from server_core.validation import (
    parse_json_body,
    validate_chat,
    validate_completion,
    validate_embeddings,
)

__all__ = ["OpenAIRoutes"]

log = Logger()

_T = TypeVar("_T")
_JSON = b"application/json"
_MAX_JSON_REPLY = 64 * 1024 * 1024


class InFlight:
    """Responses in progress, so shutdown can drain them and then end the rest honestly.

    Work still waiting for the upstream (no byte sent to the client yet) is tracked as
    Deferreds that shutdown cancels, so those clients get a 503 instead of a closed
    socket; streams already relaying get one error event.
    """

    def __init__(self) -> None:
        self._streams: set[ForwardedSse] = set()
        self._waiting: set[defer.Deferred[Any]] = set()
        self._count = 0
        self._idle_waiters: list[defer.Deferred[None]] = []
        self.closing = False

    def __len__(self) -> int:
        return self._count

    def enter(self) -> None:
        self._count += 1

    def leave(self) -> None:
        self._count -= 1
        if self._count == 0:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def add_stream(self, stream: ForwardedSse) -> None:
        self._streams.add(stream)

    def discard_stream(self, stream: ForwardedSse) -> None:
        self._streams.discard(stream)

    def waiting(self, d: defer.Deferred[_T]) -> defer.Deferred[_T]:
        """Track ``d`` (upstream work before the first byte) until it fires."""
        self._waiting.add(d)

        def done(result: _T) -> _T:
            self._waiting.discard(d)
            return result

        return d.addBoth(done)

    def when_idle(self) -> defer.Deferred[None]:
        """A fresh Deferred that fires when no response is in progress."""
        if self._count == 0:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._idle_waiters.append(d)
        return d

    def end_all(self, error: ServerCoreError) -> None:
        """Drain timeout: 503 for requests still waiting, an error event for streams."""
        for d in list(self._waiting):
            d.cancel()
        for stream in list(self._streams):
            stream.end_with(error)


def shutting_down() -> ContextError:
    return ContextError(
        "The server is shutting down; retry the request.", headers={"Retry-After": "5"}
    )


class OpenAIRoutes:
    """The OpenAI-compatible HTTP surface of server_core."""

    app = Klein()

    def __init__(
        self,
        router: IRouterState,
        *,
        clock: IReactorTime,
        api_keys: Sequence[str] = (),
        keepalive_interval: float | None = 15.0,
        idle_timeout: float | None = 300.0,
        admin: AdminApi | None = None,
    ) -> None:
        self._router = router
        self._admin = admin
        self._clock = clock
        self._api_keys = [k.encode("utf-8") for k in api_keys]
        self._keepalive = keepalive_interval
        self._idle_timeout = idle_timeout
        self.in_flight = InFlight()

    def resource(self) -> Any:
        return self.app.resource()

    # -- errors Klein itself would render as HTML ------------------------------

    @app.handle_errors(NotFound)
    def _not_found(self, request: Any, failure: Failure) -> bytes:
        path = request.path.decode("utf-8", "replace")[:200]
        return _send_error(
            request, 404, error_body(f"Unknown route: {path}", "not_found_error", "not_found")
        )

    @app.handle_errors(MethodNotAllowed)
    def _bad_method(self, request: Any, failure: Failure) -> bytes:
        method = request.method.decode("ascii", "replace")
        body = error_body(
            f"Method {method} is not allowed on this route.",
            "invalid_request_error",
            "method_not_allowed",
        )
        return _send_error(request, 405, body)

    @app.handle_errors(Exception)
    def _unexpected(self, request: Any, failure: Failure) -> bytes | None:
        return self._error(request, internal_error(failure, "route"))

    # -- routes ------------------------------------------------------------------

    @app.route("/health", methods=["GET"])
    def health(self, request: Request) -> bytes:
        request.setHeader(b"content-type", _JSON)
        return b'{"status":"ok"}'

    @app.route("/v1/models", methods=["GET"])
    def models(self, request: Request) -> bytes | None:
        try:
            self._check_auth(request)
            data = self._router.list_models()
        except ServerCoreError as error:
            return self._error(request, error)
        request.setHeader(b"content-type", _JSON)
        return json.dumps({"object": "list", "data": data}).encode("utf-8")

    @app.route("/v1/models/<path:model_id>", methods=["GET"])
    def model(self, request: Request, model_id: str) -> bytes | None:
        try:
            self._check_auth(request)
            entry = self._router.get_model(model_id)
            if entry is None:
                raise AliasNotFound(model_id)
        except ServerCoreError as error:
            return self._error(request, error)
        request.setHeader(b"content-type", _JSON)
        return json.dumps(entry).encode("utf-8")

    @app.route("/v1/chat/completions", methods=["POST"])
    async def chat_completions(self, request: Request) -> bytes | None:
        return await self._proxy(request, "/chat/completions", validate_chat)

    @app.route("/v1/completions", methods=["POST"])
    async def completions(self, request: Request) -> bytes | None:
        return await self._proxy(request, "/completions", validate_completion)

    @app.route("/v1/embeddings", methods=["POST"])
    async def embeddings(self, request: Request) -> bytes | None:
        return await self._proxy(request, "/embeddings", validate_embeddings)

    # -- admin (managed processes) -----------------------------------------------

    def _admin_api(self, request: Request) -> AdminApi:
        self._check_auth(request)
        if self._admin is None:
            raise NotFoundError(
                "This server manages no llama-server processes.", code="no_managed_models"
            )
        return self._admin

    @app.route("/running", methods=["GET"])
    def running(self, request: Request) -> bytes | None:
        try:
            payload = self._admin_api(request).running()
        except ServerCoreError as error:
            return self._error(request, error)
        request.setHeader(b"content-type", _JSON)
        return json.dumps(payload).encode("utf-8")

    @app.route("/unload", methods=["POST"])
    async def unload(self, request: Request) -> bytes | None:
        try:
            admin = self._admin_api(request)
            assert request.content is not None
            raw = request.content.read()
            alias = None
            if raw.strip():
                body = parse_json_body(raw)
                alias = body.get("alias", body.get("model"))
                if alias is not None and not isinstance(alias, str):
                    raise BadRequest("'alias' must be a string.", param="alias")
            payload = await admin.unload(alias)
        except ServerCoreError as error:
            return self._error(request, error)
        request.setHeader(b"content-type", _JSON)
        return json.dumps(payload).encode("utf-8")

    @app.route("/logs/<string:alias>", methods=["GET"])
    async def logs(self, request: Request, alias: str) -> bytes | None:
        try:
            admin = self._admin_api(request)
            if request.args.get(b"follow", [b"0"])[0] in (b"1", b"true", b"yes"):
                source = admin.follow(alias)
            else:
                request.setHeader(b"content-type", _JSON)
                return json.dumps({"alias": alias, "lines": admin.logs(alias)}).encode("utf-8")
        except ServerCoreError as error:
            return self._error(request, error)
        stream = DirectSse(
            request, source, clock=self._clock, keepalive_interval=self._keepalive, send_done=False
        )
        await stream.run()
        return None

    # -- helpers -------------------------------------------------------------------

    def _check_auth(self, request: Request) -> None:
        if not self._api_keys:
            return
        presented = b""
        auth = request.getHeader(b"authorization")
        if auth and auth[:7].lower() == b"bearer ":
            presented = auth[7:].strip()
        elif request.getHeader(b"x-api-key"):
            presented = (request.getHeader(b"x-api-key") or b"").strip()
        # Compare against every key so timing says nothing about which one was close.
        matched = False
        for key in self._api_keys:
            matched |= hmac.compare_digest(presented, key)
        if not matched:
            raise AuthenticationError(
                "Missing or invalid API key. Send it as 'Authorization: Bearer <key>'."
                if presented
                else "No API key provided. Send it as 'Authorization: Bearer <key>'."
            )

    def _error(self, request: Request, error: ServerCoreError) -> bytes | None:
        if request.startedWriting:
            # Too late for a status line; whoever started the body ends it (SseResponse).
            return None
        for name, value in error.headers.items():
            request.setHeader(name.encode("ascii"), value.encode("ascii"))
        return _send_error(request, error.status, error.to_json())

    async def _proxy(
        self, request: Request, endpoint: str, validate: Callable[[dict[str, Any]], None]
    ) -> bytes | None:
        if self.in_flight.closing:
            # Keep-alive connections may still send requests during the drain.
            request.setHeader(b"connection", b"close")
            return self._error(request, shutting_down())
        self.in_flight.enter()
        try:
            try:
                self._check_auth(request)
                assert request.content is not None
                body = parse_json_body(request.content.read())
                validate(body)
                reply = await self.in_flight.waiting(
                    defer.ensureDeferred(
                        self._router.forward(endpoint, body, request.requestHeaders)
                    )
                )
            except ServerCoreError as error:
                return self._error(request, error)
            try:
                return await self._write_reply(request, reply)
            finally:
                reply.release()
        except defer.CancelledError:
            if self.in_flight.closing and not getattr(request, "_disconnected", False):
                return self._error(request, shutting_down())  # drain timeout, not the client
            return None  # the client left; nothing can be written any more
        except ServerCoreError as error:
            return self._error(request, error)
        except Exception as exc:
            return self._error(request, internal_error(exc, endpoint))
        finally:
            self.in_flight.leave()

    async def _write_reply(self, request: Request, reply: Any) -> bytes | None:
        response = reply.response
        if not 200 <= response.code < 300:
            try:
                raw = await self.in_flight.waiting(
                    read_complete_body(
                        response,
                        limit=64 * 1024,
                        idle_timeout=self._idle_timeout,
                        clock=self._clock,
                    )
                )
            except BodyIncomplete:
                raw = b""  # the status alone still says what happened
            raise normalize_upstream_error(response.code, raw, upstream=reply.upstream_name)
        content_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        if b"text/event-stream" in content_type.lower():
            stream = ForwardedSse(
                request,
                response,
                clock=self._clock,
                upstream_name=reply.upstream_name,
                keepalive_interval=self._keepalive,
                idle_timeout=self._idle_timeout,
                model_name=reply.model_name,
            )
            self.in_flight.add_stream(stream)
            try:
                await stream.relay()
            except defer.CancelledError:
                raise
            except Exception as exc:
                # Headers are out: the only honest ending left is one SSE error event.
                stream.end_with(internal_error(exc, "stream relay"))
            finally:
                self.in_flight.discard_stream(stream)
            return None
        # A JSON answer is small: take it whole so a truncated one becomes a 502, not
        # a broken document behind a 200.
        try:
            raw = await self.in_flight.waiting(
                read_complete_body(
                    response,
                    limit=_MAX_JSON_REPLY,
                    idle_timeout=self._idle_timeout,
                    clock=self._clock,
                )
            )
            document = json.loads(raw)
        except BodyIncomplete as exc:
            raise UpstreamError(f"{reply.upstream_name}: incomplete response ({exc})") from None
        except ValueError:
            raise UpstreamError(f"{reply.upstream_name}: the response is not valid JSON") from None
        if (
            reply.model_name is not None
            and isinstance(document, dict)
            and document.get("model") not in (None, reply.model_name)
        ):
            # The model the client asked for, not the upstream's own name for it.
            document["model"] = reply.model_name
            raw = json.dumps(document, ensure_ascii=False).encode("utf-8")
        request.setResponseCode(response.code)
        request.setHeader(b"content-type", _JSON)
        return raw


def _send_error(request: Request, status: int, body: bytes) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", _JSON)
    return body
