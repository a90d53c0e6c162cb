"""Every zope interface of server_core, in one module.

Route handlers see only ``IRouterState``; the router sees ``IAliasStore``,
``IUpstreamClient`` and ``ISharedContext``; the context drives ``IServerProcess``
objects and notifies ``IStateListener`` objects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from zope.interface import Attribute, Interface

if TYPE_CHECKING:  # names for the signatures only; this module stays a leaf
    from twisted.web.server import Request

    from server_core.aliases import LocalAlias, Resolved
    from server_core.reply import ReplyTracker
    from server_core.router_state import UpstreamReply


class IAliasStore(Interface):
    """Model name -> alias (user, model file, external server, remote API)."""

    def resolve(model: str) -> Resolved:
        """Return the ``Resolved`` route for a client's ``model`` field.

        Lookup order: user alias, model-file alias, external alias, API alias
        (exact model, then prefix). Raises ``AliasNotFound`` when nothing matches.
        """

    def list_models() -> list[dict[str, Any]]:
        """OpenAI ``/v1/models`` entries (``id``, ``object``, ``owned_by``, ...)."""

    def local_aliases() -> list[LocalAlias]:
        """The aliases served by managed llama-server processes."""

    def default_model() -> str | None:
        """The model name that serves a request naming none, or None (then it is a 400)."""


class IRouterState(Interface):
    """What a route handler may do: resolve a model, forward a request, answer with it."""

    def respond(
        request: Request, endpoint: str, body: dict[str, Any], tracker: ReplyTracker
    ) -> Awaitable[bytes | None]:
        """Forward ``body`` and deliver the reply to ``request`` (error, JSON or stream).

        Returns a Deferred firing with the JSON body to return, or None once a stream has
        ended. ``tracker`` sees the work in progress so a drain can end it honestly.
        """

    def respond_native(
        request: Request, path: str, body: dict[str, Any], tracker: ReplyTracker, *, method: str
    ) -> Awaitable[bytes | None]:
        """Like ``respond``, to llama-server's own ``path`` (``/completion``, ``/props``).

        ``method`` GET sends no body (``body`` holds only the ``?model=`` the client named);
        the request's query string is passed on.
        """

    def respond_raw(
        request: Request, model: str, path: str, body: bytes | None, tracker: ReplyTracker
    ) -> Awaitable[None]:
        """Pass ``request`` (method, body, query) through to ``path`` of ``model``'s server
        and relay the answer as it is, streamed, holding a lease until it has ended."""

    def forward(
        endpoint: str, body: dict[str, Any], headers: Headers | None
    ) -> Awaitable[UpstreamReply]:
        """Forward ``body`` to where its ``model`` goes.

        Returns a Deferred firing with an ``UpstreamReply`` (status, headers, body
        producer, release hook). Fails with a ``ServerCoreError`` subclass.
        """

    def list_models() -> list[dict[str, Any]]:
        """All models a client may ask for."""

    def get_model(model_id: str) -> dict[str, Any] | None:
        """One ``/v1/models/{id}`` entry, or None."""

    def close() -> Awaitable[None]:
        """Release pools and stop what this router owns."""


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
        remote_api: bool = False,
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

    def when_lost() -> Deferred[None]:
        """A fresh Deferred that fires if the server dies while leased."""


class ISharedContext(Interface):
    """Which llama-server processes run: started on demand, swapped, stopped."""

    def acquire(alias: LocalAlias) -> Deferred[ILease]:
        """Fires with a lease on a ready server for ``alias`` (started or swapped in)."""

    def stop(alias_name: str | None = None) -> Deferred[None]:
        """Stop one alias's server or all of them; fires when stopped."""

    def close() -> Deferred[None]:
        """Shutdown: refuse new requests and stop every process now."""

    def is_loaded(alias_name: str) -> bool:
        """True while that alias's server is ready."""

    def add_state_listener(listener: IStateListener) -> None:
        """Subscribe to start / ready / stop / failed / request events."""

    def process_for(alias_name: str) -> IServerProcess | None:
        """The process currently serving ``alias_name``, if any."""

    def running() -> list[dict[str, Any]]:
        """Per alias: state, pid, port, uptime, requests in flight, last error."""

    def keep_alive(alias_name: str, seconds: float | None = None) -> float | None:
        """Set (when ``seconds`` is given) and return the idle TTL of that alias's server.

        A per-request ``keep_alive`` (Ollama's): from now on, that alias's running server
        stops once it has been idle that long; negative keeps it loaded, 0 stops it as
        soon as no request holds it. Leases still win, so no TTL ever cuts a response. It
        lasts as long as that server: the next start has the configured TTL again. None
        when the alias has no running server (nothing to keep).
        """


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

    def start() -> Deferred[None]:
        """Spawn and wait for readiness; Deferred fires when ready."""

    def stop() -> Deferred[int | None]:
        """SIGTERM the process group, SIGKILL after the grace period; fires with the exit."""

    def when_exited() -> Deferred[int | None]:
        """A fresh Deferred firing with the exit status."""

    def recent_logs() -> list[str]:
        """The last lines of the child's output."""

    def add_log_listener(listener: Callable[[str], None]) -> None:
        """Call ``listener(line)`` for every new output line."""

    def remove_log_listener(listener: Callable[[str], None]) -> None:
        """Stop calling ``listener``."""
