"""Test doubles for code built on server_core, shipped with it (as treq ships ``testing``).

- ``CannedResponse``: a complete upstream response (status, headers, body) as Agent gives it;
- ``CannedAgent``: an ``IAgent`` answering every request with one, recording what was sent
  (hand it to ``UpstreamClient(agent=...)``);
- ``StubRouter``: an ``IRouterState`` that knows one model and answers with a canned reply,
  delivered exactly as ``DefaultRouterState`` delivers (so routes can be tested in-process);
- ``FakeLease``: an ``ILease`` that counts its releases.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent
from twisted.web.server import Request
from zope.interface import implementer

from server_core.errors import AliasNotFound
from server_core.interfaces import ILease, IRouterState
from server_core.reply import ReplyDelivery, ReplyTracker
from server_core.router_state import UpstreamReply, respond_via

__all__ = ["CannedAgent", "CannedResponse", "FakeLease", "StubRouter"]


class CannedResponse:
    """A complete upstream response whose body is delivered at once, then ends cleanly."""

    def __init__(self, code: int, body: bytes, content_type: bytes = b"application/json"):
        self.code = code
        self.phrase = b"OK" if code == 200 else b"Error"
        self.version = (b"HTTP", 1, 1)
        self.length = len(body)
        self.headers = Headers({b"content-type": [content_type]})
        self.request = None
        self.previousResponse = None
        self._body = body

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(None)
        protocol.dataReceived(self._body)
        protocol.connectionLost(Failure(ResponseDone()))

    def setPreviousResponse(self, response: Any) -> None:
        self.previousResponse = response


@implementer(IAgent)
class CannedAgent:
    """Answers every request with ``response``; ``sent`` lists (method, uri, headers, body)."""

    def __init__(self, response: CannedResponse) -> None:
        self.response = response
        self.sent: list[tuple[bytes, bytes, Headers | None, bytes | None]] = []

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: Any = None,
    ) -> defer.Deferred[Any]:
        body = getattr(bodyProducer, "body", None)
        self.sent.append((method, uri, headers, body))
        return defer.succeed(self.response)


@implementer(ILease)
class FakeLease:
    """A lease on a server at ``base_url``; ``released`` counts calls to ``release``."""

    def __init__(self, alias: str = "local", base_url: str = "http://127.0.0.1:5555") -> None:
        self.alias = alias
        self.base_url = base_url
        self.chat_template_error: str | None = None
        self.released = 0

    def release(self) -> None:
        self.released += 1

    def when_lost(self) -> defer.Deferred[None]:
        return defer.Deferred()


@implementer(IRouterState)
class StubRouter:
    """Knows one model, 'known'; answers with a canned upstream response."""

    def __init__(self, clock: IReactorTime | None = None) -> None:
        self.reply = CannedResponse(200, b'{"object":"chat.completion","choices":[]}')
        self.forwarded: list[tuple[str, dict[str, Any], Any]] = []
        self.released = 0
        self.explode = False
        self._delivery = ReplyDelivery(clock or Clock())

    async def forward(self, endpoint: str, body: dict[str, Any], headers: Any) -> UpstreamReply:
        if self.explode:
            raise RuntimeError("/secret/path/in/traceback")
        if body["model"] != "known":
            raise AliasNotFound(body["model"])
        self.forwarded.append((endpoint, body, headers))

        def release() -> None:
            self.released += 1

        return UpstreamReply(
            self.reply,  # type: ignore[arg-type]
            "upstream 'known'",
            release,
            model_name=body.get("model"),
            alias="known",
        )

    async def respond(
        self, request: Request, endpoint: str, body: dict[str, Any], tracker: ReplyTracker
    ) -> bytes | None:
        return await respond_via(self.forward, self._delivery, request, endpoint, body, tracker)

    async def respond_native(
        self,
        request: Request,
        path: str,
        body: dict[str, Any],
        tracker: ReplyTracker,
        *,
        method: str = "POST",
    ) -> bytes | None:
        return await respond_via(self.forward, self._delivery, request, path, body, tracker)

    async def respond_raw(
        self, request: Request, model: str, path: str, body: bytes | None, tracker: ReplyTracker
    ) -> None:
        raise AliasNotFound(model)

    def list_models(self) -> list[dict[str, Any]]:
        return [{"id": "known", "object": "model", "owned_by": "test"}]

    def get_model(self, model_id: str) -> dict[str, Any] | None:
        return self.list_models()[0] if model_id == "known" else None

    async def close(self) -> None:
        pass
