"""The JSON control API: a Toxiproxy-like HTTP resource in front of one proxy.

Routes (no ``/proxies/{name}`` prefix, since a ``FaultProxy`` is one proxy):
``GET /``, ``GET|POST /toxics``, ``GET|DELETE /toxics/{name}``, ``POST /reset``,
``GET /stats``. The resource validates and delegates; every decision about toxics is
the proxy's, and the proxy's errors map to HTTP statuses here.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Protocol
from urllib.parse import unquote

from twisted.web.resource import Resource
from twisted.web.server import Request

from harness.netfault._errors import DuplicateToxicError, InvalidToxicError, ToxicNotFoundError
from harness.netfault._stats import ProxyStats
from harness.netfault._toxic import Toxic

# Largest request body the control API reads.
MAX_CONTROL_BODY = 64 * 1024


class ControlledProxy(Protocol):
    """The part of ``FaultProxy`` the control API drives."""

    listen_host: str

    @property
    def port(self) -> int:
        """The bound listening port; RuntimeError before ``start``."""

    @property
    def upstream(self) -> tuple[str, int]:
        """The server the proxy forwards to."""

    @property
    def seed(self) -> int:
        """The seed of the toxicity rolls and jitter/slicer draws."""

    def toxics(self) -> list[Toxic]:
        """Current toxics in the order they were added."""

    def install(self, toxic: Toxic) -> Toxic:
        """Add a toxic."""

    def get_toxic(self, name: str) -> Toxic:
        """The toxic named ``name``."""

    def remove_toxic(self, name: str) -> None:
        """Remove a toxic."""

    def reset(self) -> None:
        """Remove every toxic."""

    def stats(self) -> ProxyStats:
        """A snapshot of the counters."""


class HttpError(Exception):
    """An error response the control API sends as ``{"error", "status"}`` JSON."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ControlResource(Resource):
    """Toxiproxy-like JSON API for one proxy (no ``/proxies/{name}`` prefix)."""

    isLeaf = True
    _ROUTES: ClassVar[dict[str, tuple[str, ...]]] = {
        "/": ("GET",),
        "/toxics": ("GET", "POST"),
        "/toxics/*": ("GET", "DELETE"),
        "/reset": ("POST",),
        "/stats": ("GET",),
    }

    def __init__(self, proxy: ControlledProxy) -> None:
        super().__init__()
        self.proxy = proxy

    def render(self, request: Request) -> bytes:
        """Answer one request with JSON (or an empty 204)."""
        try:
            status, body = self._dispatch(request)
        except HttpError as e:
            status, body = e.status, {"error": e.message, "status": e.status}
        except InvalidToxicError as e:
            status, body = 400, {"error": str(e), "status": 400}
        except ToxicNotFoundError as e:
            status, body = 404, {"error": e.args[0], "status": 404}
        except DuplicateToxicError as e:
            status, body = 409, {"error": str(e), "status": 409}
        request.setResponseCode(status)
        if body is None:
            return b""
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(body).encode() + b"\n"

    def _dispatch(self, request: Request) -> tuple[int, Any]:
        method = (request.method or b"").decode("ascii", "replace")
        path = unquote((request.path or b"/").decode("utf-8", "replace"))
        route = "/toxics/*" if path.startswith("/toxics/") else path.rstrip("/") or "/"
        allowed = self._ROUTES.get(route)
        if allowed is None:
            raise HttpError(404, f"no such endpoint: {path}")
        if method not in allowed:
            raise HttpError(405, f"method {method} not allowed on {route}")
        proxy = self.proxy
        if route == "/":
            return 200, self._info()
        if route == "/toxics" and method == "GET":
            return 200, [t.to_json() for t in proxy.toxics()]
        if route == "/toxics":
            return 200, proxy.install(Toxic.from_json(self._json_body(request))).to_json()
        if route == "/toxics/*":
            name = path[len("/toxics/") :]
            if method == "GET":
                return 200, proxy.get_toxic(name).to_json()
            proxy.remove_toxic(name)
            return 204, None
        if route == "/reset":
            proxy.reset()
            return 204, None
        return 200, proxy.stats().as_dict()

    def _info(self) -> dict[str, Any]:
        proxy = self.proxy
        try:
            port: int | None = proxy.port
        except RuntimeError:  # not listening (yet, or any more)
            port = None
        return {
            "listen": f"{proxy.listen_host}:{port}",
            "upstream": f"{proxy.upstream[0]}:{proxy.upstream[1]}",
            "seed": proxy.seed,
            "toxics": [t.to_json() for t in proxy.toxics()],
        }

    @staticmethod
    def _json_body(request: Request) -> object:
        assert request.content is not None
        raw = request.content.read(MAX_CONTROL_BODY + 1)
        if len(raw) > MAX_CONTROL_BODY:
            raise HttpError(413, f"body larger than {MAX_CONTROL_BODY} bytes")
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise HttpError(400, f"body is not valid JSON: {e}") from None
