"""The admin surface over HTTP: ``/running``, ``/unload``, ``/logs/{alias}``.

Handlers parse and delegate to ``AdminApi``, which works only through
``ISharedContext``; a followed log is streamed by ``DirectSse``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.server import Request

from server_core.admin import AdminApi
from server_core.errors import BadRequest, NotFound, ServerCoreError
from server_core.sse import DirectSse
from server_core.validation import parse_json_body
from server_core.web.auth import ApiKeyCheck
from server_core.web.responses import send_json, write_error

__all__ = ["AdminRoutes"]

_YES = (b"1", b"true", b"yes")


class AdminRoutes:
    """Admin handlers; ``OpenAIRoutes`` routes to them (one Klein app serves both)."""

    def __init__(
        self,
        admin: AdminApi | None,
        *,
        check_auth: ApiKeyCheck,
        clock: IReactorTime,
        keepalive_interval: float | None,
    ) -> None:
        self._admin = admin
        self._check_auth = check_auth
        self._clock = clock
        self._keepalive = keepalive_interval

    def _api(self, request: Request) -> AdminApi:
        self._check_auth(request)
        if self._admin is None:
            raise NotFound(
                "This server manages no llama-server processes.", code="no_managed_models"
            )
        return self._admin

    def running(self, request: Request) -> bytes | None:
        """Per alias: state, pid, port, uptime, requests, chat template verdict."""
        try:
            return send_json(request, self._api(request).running())
        except ServerCoreError as error:
            return write_error(request, error)

    async def unload(self, request: Request) -> bytes | None:
        """Stop one alias's server (``{"alias": NAME}``) or all, after their requests end."""
        try:
            admin = self._api(request)
            payload = await admin.unload(_alias_of(request))
        except ServerCoreError as error:
            return write_error(request, error)
        return send_json(request, payload)

    async def logs(self, request: Request, alias: str) -> bytes | None:
        """Recent output lines of a managed process; ``?follow=1`` streams new ones."""
        try:
            admin = self._api(request)
            if request.args.get(b"follow", [b"0"])[0] not in _YES:
                return send_json(request, {"alias": alias, "lines": admin.logs(alias)})
            source = admin.follow(alias)
        except ServerCoreError as error:
            return write_error(request, error)
        stream = DirectSse(
            request, source, clock=self._clock, keepalive_interval=self._keepalive, send_done=False
        )
        await stream.run()
        return None


def _alias_of(request: Request) -> Any:
    assert request.content is not None
    raw = request.content.read()
    if not raw.strip():
        return None
    body = parse_json_body(raw)
    alias = body.get("alias", body.get("model"))
    if alias is not None and not isinstance(alias, str):
        raise BadRequest("'alias' must be a string.", param="alias")
    return alias
