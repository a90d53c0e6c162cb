"""The listening endpoint service, which says where it listens once it does."""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer
from twisted.logger import Logger

from server_core._twisted_compat import raise_synchronously, waiting_for_port

__all__ = ["Listener"]

log = Logger()


class Listener(StreamServerEndpointService):
    """Announces the bound address (``listening on http://HOST:PORT``) once listening.

    A port that cannot be bound fails the start at once (twistd exits non-zero) instead
    of being logged and retried.
    """

    def __init__(self, endpoint: Any, factory: Any) -> None:
        super().__init__(endpoint, factory)
        raise_synchronously(self)

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        waiting = waiting_for_port(self)
        assert waiting is not None
        self.when_listening: defer.Deferred[Any] = waiting.addCallback(self._announce)

    def _announce(self, port: Any) -> Any:
        address = port.getHost()
        log.info(
            "server-core listening on http://{host}:{port}", host=address.host, port=address.port
        )
        return port
