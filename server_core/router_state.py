"""DefaultRouterState: model field -> alias -> local llama-server or remote server.

The only object route handlers talk to. It resolves the client's ``model``, fills
alias ``request_params`` the client did not set, takes a lease on a managed server
when the alias is local, sends the request upstream, and delivers the reply to the
client (``server_core.reply``). The lease travels with the reply and is released only
when the response to the client has ended.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.server import Request
from zope.interface import implementer

from server_core.aliases import LocalAlias, RemoteTarget, merge_request_params
from server_core.errors import ContextError
from server_core.interfaces import IAliasStore, IRouterState, ISharedContext
from server_core.reply import ReplyDelivery, ReplyTracker
from server_core.template_check import ChatTemplateBroken
from server_core.upstream import UpstreamClient

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

    def release(self) -> None:
        """Give back the lease (idempotent)."""
        release, self._release = self._release, _noop
        release()


Forward = Callable[[str, dict[str, Any], Headers | None], Any]


async def respond_via(
    forward: Forward,
    delivery: ReplyDelivery,
    request: Request,
    endpoint: str,
    body: dict[str, Any],
    tracker: ReplyTracker,
) -> bytes | None:
    """Forward, deliver the reply, and release its lease once the response has ended."""
    reply = await tracker.waiting(
        defer.ensureDeferred(forward(endpoint, body, request.requestHeaders))
    )
    try:
        return await delivery.deliver(request, reply, tracker)
    finally:
        reply.release()


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
        if self._delivery is None:
            raise RuntimeError("this router was built without a ReplyDelivery")
        return await respond_via(self.forward, self._delivery, request, endpoint, body, tracker)

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
        target = self._aliases.resolve(str(body["model"]))
        if isinstance(target, RemoteTarget):
            outgoing = merge_request_params(body, target.request_params)
            if target.upstream_model:
                outgoing["model"] = target.upstream_model
            name = f"upstream '{target.name}'"
            response = await self._client.post_json(
                target.base_url + endpoint,
                outgoing,
                client_headers=headers,
                api_key=target.api_key,
                upstream_name=name,
                remote_api=target.kind == "api",
            )
            return UpstreamReply(response, name, model_name=str(body["model"]))
        assert isinstance(target, LocalAlias)
        if self._context is None:
            raise ContextError(
                f"The model '{target.name}' runs on a managed llama-server, and this server "
                "has no llama-server executable configured (llama_server.executable)."
            )
        lease: Any = await self._context.acquire(target)
        if endpoint == "/chat/completions" and lease.chat_template_error:
            lease.release()
            raise ChatTemplateBroken(target.name)
        try:
            outgoing = merge_request_params(body, target.request_params)
            outgoing["model"] = target.name
            name = f"model '{target.name}'"
            response = await self._client.post_json(
                f"{lease.base_url}/v1{endpoint}",
                outgoing,
                client_headers=headers,
                upstream_name=name,
            )
        except BaseException:
            lease.release()
            raise
        return UpstreamReply(response, name, lease.release, model_name=target.name)

    def list_models(self) -> list[dict[str, Any]]:
        return self._aliases.list_models()

    def get_model(self, model_id: str) -> dict[str, Any] | None:
        for entry in self._aliases.list_models():
            if entry.get("id") == model_id:
                return entry
        return None

    async def close(self) -> None:
        if self._context is not None:
            stopped: Any = self._context.close()
            await stopped
        await self._client.close()
