"""The status page in-process: what it renders, that every value is escaped, its headers,
its assets, the key rule, and the recent requests it remembers."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from importlib import resources
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock

from server_core.metrics import ServerMetrics
from server_core.metrics.events import EventBus
from server_core.testing import StubRouter
from server_core.web import OpenAIRoutes
from server_core.web.ui import RecentRequests, render_page

HOSTILE = '<script>alert("x")</script>'


class Page(HTMLParser):
    """The parts of a document the tests look at: texts, script elements, attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.alias_rows: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attributes += attrs
        if tag == "script":
            self.scripts.append(dict(attrs))
        if tag == "tr" and dict(attrs).get("data-alias") is not None:
            self.alias_rows[str(dict(attrs)["data-alias"])] = tag

    def handle_data(self, data: str) -> None:
        self.texts.append(data)


def parse(document: bytes) -> Page:
    page = Page()
    page.feed(document.decode("utf-8"))
    return page


class StatusRouter(StubRouter):
    """A router whose models carry names an attacker chose and managed statuses."""

    def list_models(self) -> list[dict[str, Any]]:
        return [
            {"id": HOSTILE, "object": "model", "status": {"value": "failed", "reason": HOSTILE}},
            {"id": "tiny", "object": "model", "status": {"value": "loaded"}},
            {"id": "remote", "object": "model"},
        ]


def make(api_keys: tuple[str, ...] = (), metrics: ServerMetrics | None = None) -> StubTreq:
    clock = Clock()
    routes = OpenAIRoutes(StatusRouter(clock), clock=clock, api_keys=api_keys, metrics=metrics)
    return StubTreq(routes.resource())


def get(stub: StubTreq, path: str, **kw: Any) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    d = stub.request("GET", "http://localhost" + path, **kw)
    stub.flush()
    response = d.result
    content = response.content()
    stub.flush()
    return response.code, dict(response.headers.getAllRawHeaders()), content.result


def test_a_hostile_model_name_and_reason_are_text_not_markup() -> None:
    document = render_page(
        [{"id": HOSTILE, "status": {"value": "failed", "reason": HOSTILE}}], [], [], locked=False
    )
    page = parse(document)
    # The only script is the page's own file; the name is shown as it is, as text.
    assert page.scripts == [{"src": "/ui/ui.js", "defer": None}]
    assert page.texts.count(HOSTILE) >= 3  # the row, the reason, the log choice
    assert HOSTILE in page.alias_rows
    assert b"<script>alert" not in document


def test_a_hostile_finished_request_is_escaped_in_every_column() -> None:
    event = {
        "route": HOSTILE,
        "model": HOSTILE,
        "status": 200,
        "ending": '"><img src=x>',
        "cause": HOSTILE,
        "ttft": 0.0123,
        "duration": 0.5,
        "at": 0,
    }
    document = render_page([], [], [event], locked=False)
    page = parse(document)
    assert page.scripts == [{"src": "/ui/ui.js", "defer": None}]
    assert b"<img" not in document
    assert ("data-ending", '"><img src=x>') in page.attributes  # an attribute, not a tag
    assert HOSTILE in page.texts and "0.012 s" in page.texts and "0.500 s" in page.texts
    assert "00:00:00" in page.texts


def test_the_page_shows_models_states_and_in_flight_counts() -> None:
    running = [{"alias": "tiny", "state": "ready", "in_flight": 2, "waiting": 1, "requests": 7}]
    models: list[dict[str, Any]] = [{"id": "tiny", "status": {"value": "loaded"}}, {"id": "remote"}]
    text = render_page(models, running, [], locked=False).decode()
    row = re.search(r'<tr data-alias="tiny">(.*?)</tr>', text)
    assert row is not None
    cells = re.findall(r'<td class="([a-z-]+)"[^>]*>([^<]*)</td>', row.group(1))
    assert cells == [
        ("alias", "tiny"),
        ("status", "loaded"),
        ("in-flight", "2"),
        ("waiting", "1"),
        ("requests", "7"),
        ("detail", ""),
    ]
    assert 'data-status="external"' in text  # a model server_core does not run
    assert '<option value="tiny">' in text and '<option value="remote">' not in text


def test_get_ui_is_html_with_a_strict_policy() -> None:
    status, headers, body = get(make(), "/ui")
    assert status == 200
    assert headers[b"Content-Type"] == [b"text/html; charset=utf-8"]
    policy = headers[b"Content-Security-Policy"][0]
    assert policy.startswith(b"default-src 'self'") and b"frame-ancestors 'none'" in policy
    assert b"unsafe-inline" not in policy
    assert headers[b"X-Content-Type-Options"] == [b"nosniff"]
    assert headers[b"Cache-Control"] == [b"no-store"]
    page = parse(body)
    assert {"tiny", HOSTILE, "remote"} <= set(page.alias_rows)
    assert b'data-locked="0"' in body


def test_with_keys_the_page_without_a_key_tells_no_model_and_asks_for_one() -> None:
    stub = make(api_keys=("sekret",))
    status, headers, body = get(stub, "/ui")
    assert status == 401
    assert headers[b"Content-Security-Policy"]
    assert b"tiny" not in body and b"remote" not in body
    assert b'data-locked="1"' in body and b'id="key"' in body
    status, _, body = get(stub, "/ui", headers={"Authorization": "Bearer sekret"})
    assert status == 200 and b'data-alias="tiny"' in body and b'data-locked="0"' in body
    status, _, _ = get(stub, "/ui", headers={"Authorization": "Bearer wrong"})
    assert status == 401


def test_the_assets_are_served_with_their_types_and_nothing_else_is() -> None:
    stub = make(api_keys=("sekret",))  # code and style, no data: no key needed
    status, headers, body = get(stub, "/ui/ui.js")
    assert status == 200
    assert headers[b"Content-Type"] == [b"text/javascript; charset=utf-8"]
    assert headers[b"X-Content-Type-Options"] == [b"nosniff"]
    assert body == resources.files("server_core.web").joinpath("ui_static", "ui.js").read_bytes()
    status, headers, body = get(stub, "/ui/ui.css")
    assert status == 200 and headers[b"Content-Type"] == [b"text/css; charset=utf-8"]
    assert b"td.status" in body
    for path in ("/ui/secret.txt", "/ui/..%2Fui.py", "/ui/ui.py"):
        status, headers, body = get(stub, path)
        assert status == 404, path
        assert headers[b"Content-Type"][0].startswith(b"application/json")


def test_the_script_writes_text_only_and_the_page_has_no_inline_code() -> None:
    script = resources.files("server_core.web").joinpath("ui_static", "ui.js").read_text()
    assert "innerHTML" not in script and "outerHTML" not in script
    assert "insertAdjacentHTML" not in script and "eval(" not in script
    assert "textContent" in script
    document = render_page([{"id": "tiny", "status": {"value": "loaded"}}], [], [], locked=True)
    page = parse(document)
    assert not [name for name, _ in page.attributes if name.startswith("on") or name == "style"]
    assert all(s.get("src") for s in page.scripts)
    assert b"<form" not in document  # a key typed in must never be submitted into a URL


def test_recent_requests_start_listening_only_when_asked_and_keep_the_newest() -> None:
    clock = Clock()
    bus = EventBus()
    recent = RecentRequests(bus, clock, size=3)
    assert not bus  # nothing subscribes before the page is first asked for
    recent.start()
    recent.start()  # idempotent
    assert bus
    for n in range(5):
        clock.advance(1)
        bus.publish({"type": "request_start", "route": "/x"})
        bus.publish({"type": "request_end", "route": "/x", "model": f"m{n}", "status": 200})
    assert [row["model"] for row in recent.rows()] == ["m4", "m3", "m2"]
    assert [row["at"] for row in recent.rows()] == [5.0, 4.0, 3.0]
    recent.stop()
    assert not bus


def test_the_page_lists_the_requests_finished_after_it_was_first_shown() -> None:
    metrics = ServerMetrics(Clock())
    stub = make(metrics=metrics)
    _, _, before = get(stub, "/ui")
    assert b"m-finished" not in before
    metrics.bus.publish(
        {
            "type": "request_end",
            "route": "/v1/chat/completions",
            "model": "m-finished",
            "alias": "tiny",
            "status": 200,
            "ending": "error_event",
            "cause": "stall",
            "ttft": 0.25,
            "duration": 1.0,
        }
    )
    _, _, after = get(stub, "/ui")
    page = parse(after)
    assert "m-finished" in page.texts and "error_event (stall)" in page.texts
    assert "0.250 s" in page.texts
