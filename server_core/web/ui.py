"""The status page, ``GET /ui``: models and their states, requests, live logs.

One HTML page rendered here (it reads without JavaScript: the models, their states and
in-flight counts, the last requests) and two same-origin assets from ``ui_static/``
(``ui.js`` keeps the page live from ``/api/events`` and ``/logs/{alias}?follow=1``,
``ui.css``). No build step, nothing fetched from elsewhere.

Security: every value from a model, a request or a log line is escaped here and set as
``textContent`` by the script (a log line is attacker-influenced). The answers carry a
Content-Security-Policy of ``default-src 'self'`` (no inline script or style, so no
inline event handlers either), ``nosniff``, no referrer, no framing, no caching. With
API keys configured the page without a key shows no model data (401) and asks for the key
in a field; the script keeps it in memory only and sends it as a bearer header with
``fetch`` (``EventSource`` cannot send headers), so the key is never in a URL, a cookie
or storage. The page only reads: its requests are same-origin GETs, which the browser
guard lets through (a POST from it would carry ``Origin`` and be refused).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from html import escape
from importlib import resources
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

from server_core.errors import AuthenticationError, NotFound, ServerCoreError
from server_core.interfaces import IRouterState
from server_core.metrics.events import EventBus, Subscription
from server_core.web.responses import write_error

__all__ = ["ASSETS", "RECENT", "RecentRequests", "StatusPage", "render_page"]

log = Logger()

RECENT = 50
"""Finished requests the page remembers (and the script keeps)."""

ASSETS = {"ui.js": b"text/javascript; charset=utf-8", "ui.css": b"text/css; charset=utf-8"}
"""The files of ``ui_static/`` that ``/ui/{name}`` serves, with their types; nothing else."""

CSP = (
    b"default-src 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'; "
    b"form-action 'none'"
)

Rows = Callable[[], list[dict[str, Any]]]


class RecentRequests:
    """The last finished model requests, read off the event bus.

    It subscribes the first time the page is asked for (``start``), not before: until
    someone looks, no event is built for it and a request costs nothing more.
    """

    def __init__(self, bus: EventBus | None, clock: IReactorTime, size: int = RECENT) -> None:
        self._bus = bus
        self._clock = clock
        self._rows: deque[dict[str, Any]] = deque(maxlen=size)
        self._subscription: Subscription | None = None

    def start(self) -> None:
        """Begin recording (idempotent)."""
        if self._subscription is not None or self._bus is None:
            return
        self._subscription = self._bus.subscribe()
        recording = defer.ensureDeferred(self._record(self._subscription))
        recording.addErrback(lambda failure: log.failure("recent requests", failure))

    def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.close()

    def rows(self) -> list[dict[str, Any]]:
        """Newest first, each a ``request_end`` event with ``at`` (epoch seconds)."""
        return list(reversed(self._rows))

    async def _record(self, subscription: Subscription) -> None:
        async for event in subscription:
            if event.get("type") == "request_end":
                self._rows.append({**event, "at": self._clock.seconds()})


class StatusPage:
    """The handlers of ``/ui`` and ``/ui/{asset}``."""

    def __init__(
        self,
        router: IRouterState,
        *,
        check_auth: Callable[[Request], None],
        running: Rows | None,
        recent: RecentRequests,
    ) -> None:
        self._router = router
        self._check_auth = check_auth
        self._running = running
        self._recent = recent

    def page(self, request: Request) -> bytes:
        """The page; without a valid key (when keys are set) a shell that asks for one."""
        _protect(request, b"text/html; charset=utf-8")
        try:
            self._check_auth(request)
        except AuthenticationError:
            request.setResponseCode(401)
            return render_page([], [], [], locked=True)
        self._recent.start()
        rows = self._running() if self._running is not None else []
        return render_page(self._router.list_models(), rows, self._recent.rows(), locked=False)

    def asset(self, request: Request, name: str) -> bytes | None:
        """One file of ``ui_static/`` (code and style only: no data, no key needed)."""
        content_type = ASSETS.get(name)
        if content_type is None:
            error: ServerCoreError = NotFound(f"Unknown route: /ui/{name[:100]}")
            return write_error(request, error)
        _protect(request, content_type)
        return _asset_bytes(name)


def _protect(request: Request, content_type: bytes) -> None:
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-security-policy", CSP)
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"no-referrer")
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"cache-control", b"no-store")


def _asset_bytes(name: str) -> bytes:
    return resources.files("server_core.web").joinpath("ui_static", name).read_bytes()


# -- rendering -----------------------------------------------------------------------


def render_page(
    models: list[dict[str, Any]],
    running: list[dict[str, Any]],
    recent: list[dict[str, Any]],
    *,
    locked: bool,
) -> bytes:
    """The whole HTML document; every value in it is escaped."""
    parts = [
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>server_core status</title>",
        '<link rel="stylesheet" href="/ui/ui.css">',
        '<script src="/ui/ui.js" defer></script></head>',
        f'<body data-locked="{int(locked)}">',
        '<header><h1>server_core</h1><span id="live" data-live="static">static page</span>',
        "</header><main>",
        _key_section(locked),
        _models_section(models, running, locked),
        _recent_section(recent),
        _logs_section(models),
        "</main></body></html>\n",
    ]
    return "".join(parts).encode("utf-8")


def _key_section(locked: bool) -> str:
    hidden = "" if locked else " hidden"
    return (
        f'<section id="key-needed"{hidden}><h2>API key</h2>'
        "<p>This server needs an API key. It is kept in this page only (never stored or "
        "put in a URL) and sent as a bearer header. Without JavaScript, use "
        "<code>curl -H 'Authorization: Bearer KEY' /ui</code>.</p>"
        '<input id="key" type="password" autocomplete="off" aria-label="API key">'
        '<button id="key-use" type="button">Connect</button></section>'
    )


def _models_section(
    models: list[dict[str, Any]], running: list[dict[str, Any]], locked: bool
) -> str:
    by_alias = {str(row.get("alias")): row for row in running}
    rows = [_model_row(entry, by_alias.get(str(entry.get("id")), {})) for entry in models]
    empty = "key needed" if locked else "no models configured"
    placeholder = f'<tr class="empty"><td colspan="6">{empty}</td></tr>' if not rows else ""
    return (
        '<section><h2>Models</h2><table id="models"><thead><tr><th>model</th>'
        "<th>status</th><th>in flight</th><th>waiting</th><th>requests</th><th>detail</th>"
        f"</tr></thead><tbody>{''.join(rows)}{placeholder}</tbody></table></section>"
    )


def _model_row(entry: dict[str, Any], row: dict[str, Any]) -> str:
    name = str(entry.get("id", ""))
    status = entry.get("status")
    value = str(status.get("value", "")) if isinstance(status, dict) else "external"
    detail = str(status.get("reason") or "") if isinstance(status, dict) else ""
    if not detail and row.get("last_error"):
        detail = str(row["last_error"])
    return (
        f'<tr data-alias="{_e(name)}"><td class="alias">{_e(name)}</td>'
        f'<td class="status" data-status="{_e(value)}">{_e(value)}</td>'
        f'<td class="in-flight">{_count(row.get("in_flight"))}</td>'
        f'<td class="waiting">{_count(row.get("waiting"))}</td>'
        f'<td class="requests">{_count(row.get("requests"))}</td>'
        f'<td class="detail">{_e(detail)}</td></tr>'
    )


_RECENT_COLUMNS = ("time", "route", "model", "status", "ending", "ttft", "duration")


def _recent_section(recent: Iterable[dict[str, Any]]) -> str:
    head = "".join(f"<th>{name}</th>" for name in _RECENT_COLUMNS)
    rows = "".join(_recent_row(event) for event in recent)
    return (
        f'<section><h2>Last requests</h2><table id="recent"><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table></section>"
    )


def _recent_row(event: dict[str, Any]) -> str:
    ending = str(event.get("ending") or "")
    if event.get("cause"):
        ending += f" ({event['cause']})"
    cells = (
        time.strftime("%H:%M:%S", time.gmtime(float(event.get("at") or 0))),
        str(event.get("route") or ""),
        str(event.get("model") or ""),
        str(event.get("status") or ""),
        ending,
        _seconds(event.get("ttft")),
        _seconds(event.get("duration")),
    )
    tds = "".join(
        f'<td class="{c}">{_e(v)}</td>' for c, v in zip(_RECENT_COLUMNS, cells, strict=True)
    )
    return f'<tr data-ending="{_e(str(event.get("ending") or ""))}">{tds}</tr>'


def _logs_section(models: list[dict[str, Any]]) -> str:
    managed = [str(m.get("id", "")) for m in models if isinstance(m.get("status"), dict)]
    options = "".join(f'<option value="{_e(name)}">{_e(name)}</option>' for name in managed)
    return (
        '<section><h2>Logs</h2><label>model <select id="log-alias">'
        f'<option value="">(none)</option>{options}</select></label> '
        '<span id="log-state"></span>'
        "<noscript><p>Live logs need JavaScript; <code>/logs/MODEL</code> gives a model's "
        "recent lines as JSON.</p></noscript>"
        '<pre id="log"></pre></section>'
    )


def _e(value: str) -> str:
    return escape(value, quote=True)


def _count(value: Any) -> str:
    return str(int(value)) if isinstance(value, int | float) else "0"


def _seconds(value: Any) -> str:
    return f"{float(value):.3f} s" if isinstance(value, int | float) else ""


def status_page(
    router: IRouterState,
    check_auth: Callable[[Request], None],
    *,
    admin: Any,
    metrics: Any,
    clock: IReactorTime,
) -> StatusPage:
    """The page over an ``AdminApi`` (``admin``, or None) and a ``ServerMetrics`` (or None)."""
    return StatusPage(
        router,
        check_auth=check_auth,
        running=(lambda: list(admin.running()["data"])) if admin is not None else None,
        recent=RecentRequests(metrics.bus if metrics is not None else None, clock),
    )
