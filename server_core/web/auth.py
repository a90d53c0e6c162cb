"""API keys: checked in constant time, presented as a bearer token or ``X-Api-Key``."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from twisted.web.server import Request

from server_core.errors import AuthenticationError

__all__ = ["ApiKeyCheck"]


class ApiKeyCheck:
    """Raises ``AuthenticationError`` unless the request carries one of ``api_keys``.

    With no keys configured every request passes (the loopback default).
    """

    def __init__(self, api_keys: Sequence[str] = ()) -> None:
        self._keys = [key.encode("utf-8") for key in api_keys]

    def __call__(self, request: Request) -> None:
        if not self._keys:
            return
        presented = b""
        auth = request.getHeader(b"authorization")
        if auth and auth[:7].lower() == b"bearer ":
            presented = auth[7:].strip()
        elif request.getHeader(b"x-api-key"):
            presented = (request.getHeader(b"x-api-key") or b"").strip()
        # Compare against every key so timing says nothing about which one was close.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(presented, key)
        if not matched:
            raise AuthenticationError(
                "Missing or invalid API key. Send it as 'Authorization: Bearer <key>'."
                if presented
                else "No API key provided. Send it as 'Authorization: Bearer <key>'."
            )
