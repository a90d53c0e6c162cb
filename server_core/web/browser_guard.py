"""The browser defences: a request a web page made without being allowed to is refused.

A server on loopback with no key is what browser attacks on local model servers aim at.
A page on any site can make the browser send a "simple" cross-site request (a
``text/plain`` POST needs no CORS preflight) to ``127.0.0.1``, and a page whose own name
was rebound to ``127.0.0.1`` (DNS rebinding) can even read the answers. ``BrowserGuard``
wraps the whole Klein resource, so its checks run before routing and before any handler
reads the body, in this order:

1. ``Host`` must be an allowed name (the loopback names, the listen address's host,
   ``server.allowed_hosts``); otherwise **421 Misdirected Request**: the request was
   sent to a name this server does not answer to. A rebinding page always sends its own
   name, so it never gets past this.
2. A browser request from a page whose origin is not in ``server.cors_origins`` is
   refused with **403**: an ``Origin`` header not in the list, or ``Sec-Fetch-Site:
   cross-site``/``same-site`` without an allowed ``Origin``. Clients that are not
   browsers (curl, the SDKs) send neither header and are not affected.
3. An allowed origin's preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is
   answered here with **204**; its other requests get ``Access-Control-Allow-Origin``.
4. A ``POST`` with a body must say ``Content-Type: application/json`` (parameters such
   as ``charset`` allowed), else **415**: the forms and ``text/plain`` bodies a page can
   send without a preflight are never parsed. The one exception: a body for the raw
   ``/upstream/`` pass-through (an audio upload, say) may have any type when the
   request carries ``Authorization`` or ``X-Api-Key``, headers a page cannot add
   without the preflight that step 2 refuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.server import Request

from server_core.config.browser_values import ANY_HOST, is_ip_literal, split_host
from server_core.errors import ServerCoreError
from server_core.web.responses import write_error

__all__ = ["BrowserGuard", "HostCheck"]

_CROSS = (b"cross-site", b"same-site")
_METHODS = b"GET, POST, OPTIONS"
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_PREFLIGHT_MAX_AGE = b"600"


class HostCheck:
    """Which ``Host`` headers are accepted.

    An entry without a port accepts its name on any port, ``name:port`` that port only,
    ``*`` anything. With ``ip_literals`` (a server bound to every interface) any IP
    address is accepted too: rebinding needs a DNS name the attacker controls, and a
    browser sends an address as ``Host`` only when the page itself came from it.
    """

    def __init__(self, entries: Sequence[str], *, ip_literals: bool = False) -> None:
        self._any = ANY_HOST in entries
        self._ip_literals = ip_literals
        self._names: set[str] = set()
        self._with_port: set[tuple[str, int]] = set()
        for entry in entries:
            host = split_host(entry) if entry != ANY_HOST else None
            if host is None:
                continue
            if host[1] is None:
                self._names.add(host[0])
            else:
                self._with_port.add((host[0], host[1]))

    def allows(self, value: str) -> bool:
        """``value`` (a ``Host`` header) names this server."""
        if self._any:
            return True
        host = split_host(value)
        if host is None:
            return False
        name, port = host
        if name in self._names or (port is not None and (name, port) in self._with_port):
            return True
        return self._ip_literals and is_ip_literal(name)


class BrowserGuard(Resource):
    """Wraps ``resource``: refuses what a browser must not do, then serves the request."""

    isLeaf = True

    def __init__(
        self, resource: IResource, *, hosts: HostCheck, cors_origins: Sequence[str] = ()
    ) -> None:
        super().__init__()
        self._resource = resource
        self._hosts = hosts
        self._origins = frozenset(cors_origins)

    def render(self, request: Request) -> Any:
        refusal = self._host_refusal(request)
        if refusal is not None:
            body = write_error(request, refusal)
            # Twisted's table of reason phrases has no 421.
            request.setResponseCode(421, b"Misdirected Request")
            return body
        origin, refusal = self._origin(request)
        if refusal is not None:
            return write_error(request, refusal)
        if self._origins:
            # The answer depends on Origin: caches must not give one origin's to another.
            request.setHeader(b"vary", b"Origin")
        if origin is not None:
            request.setHeader(b"access-control-allow-origin", origin)
            if request.method == b"OPTIONS" and request.getHeader(b"access-control-request-method"):
                return _preflight(request)
        refusal = _content_type_refusal(request)
        if refusal is not None:
            return write_error(request, refusal)
        # The rest of the traversal, as Site.getResourceFor would have done it.
        return getChildForRequest(self._resource, request).render(request)

    def _host_refusal(self, request: Request) -> ServerCoreError | None:
        values = request.requestHeaders.getRawHeaders(b"host") or []
        # No Host at all is not a browser (browsers always send it); the site answers it.
        for raw in values:
            text = raw.decode("latin-1")
            if not self._hosts.allows(text):
                shown = "".join(c for c in text[:100] if c.isprintable())
                return ServerCoreError(
                    f"This server does not answer to the host name {shown!r}. Connect to it "
                    "as localhost or 127.0.0.1, or have its operator add the name to "
                    "server.allowed_hosts.",
                    status=421,
                    type="invalid_request_error",
                    code="host_not_allowed",
                )
        return None

    def _origin(self, request: Request) -> tuple[bytes | None, ServerCoreError | None]:
        """The allowed origin of a browser request (or None), or why it is refused."""
        origins = request.requestHeaders.getRawHeaders(b"origin") or []
        site = (request.getHeader(b"sec-fetch-site") or b"").strip().lower()
        if not origins and site not in _CROSS:
            return None, None  # not a page's request: curl, an SDK, or a typed URL
        if len(origins) == 1 and origins[0].strip().lower().decode("latin-1") in self._origins:
            return origins[0].strip(), None
        shown = "".join(c for c in b",".join(origins).decode("latin-1")[:100] if c.isprintable())
        where = f"the web page at {shown!r}" if origins else "another site's web page"
        return None, ServerCoreError(
            f"Requests from {where} are refused: browsers may call this server only from "
            "the origins its operator lists in server.cors_origins. Programs that are not "
            "browsers are not affected.",
            status=403,
            type="permission_error",
            code="origin_not_allowed",
        )


def _preflight(request: Request) -> bytes:
    """204 for an allowed origin's preflight: our methods, and the headers it asked for."""
    request.setResponseCode(204)
    request.setHeader(b"access-control-allow-methods", _METHODS)
    asked = b",".join(request.requestHeaders.getRawHeaders(b"access-control-request-headers", []))
    names = [n.strip() for n in asked.split(b",") if n.strip()]
    # Echoed only when each is a header-name token: the origin is trusted, not the bytes.
    if names and all(set(n) <= _TOKEN for n in names):
        request.setHeader(b"access-control-allow-headers", b", ".join(names))
    request.setHeader(b"access-control-max-age", _PREFLIGHT_MAX_AGE)
    return b""


def _content_type_refusal(request: Request) -> ServerCoreError | None:
    """A POST whose body is not declared JSON (a bodiless POST without a type passes)."""
    if request.method != b"POST":
        return None
    content_type = request.getHeader(b"content-type")
    if content_type is None and not _has_body(request):
        return None  # ``curl -X POST /unload``: nothing to parse
    media = (content_type or b"").split(b";", 1)[0].strip().lower()
    if media == b"application/json":
        return None
    if request.path.startswith(b"/upstream/") and _not_simple(request):
        return None
    shown = (content_type or b"").decode("latin-1")[:100]
    said = f"Content-Type {shown!r}" if content_type is not None else "no Content-Type"
    return ServerCoreError(
        f"The request body must be JSON sent with 'Content-Type: application/json'; "
        f"this request has {said}.",
        status=415,
        type="invalid_request_error",
        code="unsupported_media_type",
    )


def _not_simple(request: Request) -> bool:
    """Carries a header no page can send without a CORS preflight."""
    return any(request.getHeader(name) for name in (b"authorization", b"x-api-key"))


def _has_body(request: Request) -> bool:
    if request.getHeader(b"transfer-encoding") is not None:
        return True
    length = (request.getHeader(b"content-length") or b"0").strip()
    return length.lstrip(b"0") != b""
