"""Every zope interface of server_core, in one module.

Route handlers see only ``IRouterState``; the router sees ``IAliasStore``,
``IUpstreamClient`` and ``ISharedContext``; the context drives ``IServerProcess``
objects and notifies ``IStateListener`` objects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from zope.interface import Attribute, Interface


class IAliasStore(Interface):
    """Model name -> alias (user, model file, external server, remote API)."""

    def resolve(model: str) -> Any:
        """Return the ``Resolved`` route for a client's ``model`` field.

        Lookup order: user alias, model-file alias, external alias, API alias
        (exact model, then prefix). Raises ``AliasNotFound`` when nothing matches.
        """

    def list_models() -> list[dict[str, Any]]:
        """OpenAI ``/v1/models`` entries (``id``, ``object``, ``owned_by``, ...)."""

    def local_aliases() -> list[Any]:
        """The aliases served by managed llama-server processes."""


class IRouterState(Interface):
    """What a route handler may do: resolve a model, forward a request, answer with it."""

    def respond(request: Any, endpoint: str, body: dict[str, Any], tracker: Any) -> Any:
        """Forward ``body`` and deliver the reply to ``request`` (error, JSON or stream).

        Returns a Deferred firing with the JSON body to return, or None once a stream has
        ended. ``tracker`` sees the work in progress so a drain can end it honestly.
        """

    def forward(endpoint: str, body: dict[str, Any], headers: Any) -> Any:
        """Forward ``body`` to where its ``model`` goes.

        Returns a Deferred firing with an ``UpstreamReply`` (status, headers, body
        producer, release hook). Fails with a ``ServerCoreError`` subclass.
        """

    def list_models() -> list[dict[str, Any]]:
        """All models a client may ask for."""

    def get_model(model_id: str) -> dict[str, Any] | None:
        """One ``/v1/models/{id}`` entry, or None."""

    def close() -> Any:
        """Release pools and stop what this router owns; returns a Deferred."""


class IUpstreamClient(Interface):
    """Sends requests to an upstream server (llama-server, an external server, an API).

    Both requests answer once the response headers arrived; the caller reads the body.
    Failures before that are ``UpstreamError``; a cancel stays ``CancelledError``.
    """

    def post_json(
        url: str,
        body: Mapping[str, Any],
        *,
        client_headers: Headers | None = None,
        api_key: str | None = None,
        upstream_name: str,
    ) -> Awaitable[IResponse]:
        """POST ``body`` as JSON with the client's forwardable headers and ``api_key``."""

    def get(url: str, *, api_key: str | None = None, upstream_name: str) -> Awaitable[IResponse]:
        """GET ``url``, expecting JSON."""

    def close() -> Deferred[None]:
        """Close idle pooled connections (shutdown)."""


class ILease(Interface):
    """The right to send requests to one ready server until ``release``."""

    alias = Attribute("alias name the lease is for")
    base_url = Attribute("http://127.0.0.1:PORT of the leased server")
    chat_template_error = Attribute(
        "why the server's chat template cannot carry a conversation, or None"
    )

    def release() -> None:
        """Give the lease back. Idempotent."""

    def when_lost() -> Any:
        """A fresh Deferred that fires if the server dies while leased."""


class ISharedContext(Interface):
    """Which llama-server processes run: started on demand, swapped, stopped."""

    def acquire(alias: Any) -> Any:
        """A Deferred firing with an ``ILease`` on a ready server for ``alias``."""

    def stop(alias_name: str | None = None) -> Any:
        """Stop one alias's server or all of them; Deferred fires when stopped."""

    def close() -> Any:
        """Shutdown: refuse new requests and stop every process now (Deferred)."""

    def is_loaded(alias_name: str) -> bool:
        """True while that alias's server is ready."""

    def add_state_listener(listener: IStateListener) -> None:
        """Subscribe to start / ready / stop / failed / request events."""

    def process_for(alias_name: str) -> IServerProcess | None:
        """The process currently serving ``alias_name``, if any."""

    def running() -> list[dict[str, Any]]:
        """Per alias: state, pid, port, uptime, requests in flight, last error."""


class IStateListener(Interface):
    """Receives lifecycle events of the shared context."""

    def on_state_change(event: str, alias: str, detail: dict[str, Any]) -> None:
        """Called with ``start``, ``ready``, ``stop``, ``failed`` or ``request``."""


class IServerProcess(Interface):
    """One upstream llama-server child process."""

    alias = Attribute("alias name")
    state = Attribute("stopped | starting | ready | stopping | failed")
    port = Attribute("TCP port once ready, else None")
    pid = Attribute("process id while running, else None")
    base_url = Attribute("http://127.0.0.1:PORT once the port is known, else None")
    started_at = Attribute("clock time when it became ready, else None")
    last_error = Attribute("why the last start failed or the process died, else None")

    def start() -> Any:
        """Spawn and wait for readiness; Deferred fires when ready."""

    def stop() -> Any:
        """SIGTERM the process group, SIGKILL after the grace period."""

    def when_exited() -> Any:
        """A fresh Deferred firing with the exit status."""

    def recent_logs() -> list[str]:
        """The last lines of the child's output."""

    def add_log_listener(listener: Any) -> None:
        """Call ``listener(line)`` for every new output line."""

    def remove_log_listener(listener: Any) -> None:
        """Stop calling ``listener``."""
