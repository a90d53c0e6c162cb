"""BrowserGuard in-process (treq's StubTreq): Host, Origin, Sec-Fetch-Site, CORS, Content-Type.

The wrapped resource records every request that reached it: a refused request must
never get there, and its answer is an OpenAI-shaped JSON error.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Request

from server_core.config import ServerSettings
from server_core.config.exposure import allowed_hosts
from server_core.testing import StubRouter
from server_core.web import OpenAIRoutes
from server_core.web.browser_guard import BrowserGuard, HostCheck

DEFAULT_HOSTS = allowed_hosts(ServerSettings(), "tcp:1135:interface=127.0.0.1")


class Recorder(Resource):
    """A leaf that answers 200 and remembers who reached it (without reading the body)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.reached: list[bytes] = []

    def render(self, request: Request) -> bytes:
        self.reached.append(request.path)
        return b'{"ok":true}'


def guard(
    hosts: tuple[str, ...] = DEFAULT_HOSTS, origins: tuple[str, ...] = (), **kw: Any
) -> tuple[StubTreq, Recorder]:
    inner = Recorder()
    return StubTreq(BrowserGuard(inner, hosts=HostCheck(hosts, **kw), cors_origins=origins)), inner


def call(stub: StubTreq, method: str, url: str, **kw: Any) -> tuple[int, Any, Any]:
    d = stub.request(method, url, **kw)
    stub.flush()
    response = d.result
    content = response.content()
    stub.flush()
    raw = content.result
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = raw
    return response.code, payload, response.headers


def error_of(payload: Any) -> dict[str, Any]:
    assert isinstance(payload, dict) and set(payload) == {"error"}, payload
    error = payload["error"]
    assert set(error) == {"message", "type", "code", "param"} and error["message"]
    return error


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:1135", "LOCALHOST:8080", "127.0.0.1", "127.0.0.1:1135",
             "[::1]", "[::1]:1135"],
)  # fmt: skip
def test_the_loopback_names_pass_with_and_without_a_port(host: str) -> None:
    stub, inner = guard()
    status, _, _ = call(stub, "GET", "http://x/v1/models", headers={"Host": host})
    assert status == 200 and inner.reached == [b"/v1/models"]


FOREIGN = ["evil.example", "evil.example:1135", "127.0.0.1.evil.example", "localhost.evil",
           "10.0.0.5:1135", "bad host", "[::1"]  # fmt: skip


@pytest.mark.parametrize("host", FOREIGN)
def test_a_foreign_host_gets_421_and_never_reaches_the_resource(host: str) -> None:
    stub, inner = guard()
    status, payload, headers = call(stub, "GET", "http://x/running", headers={"Host": host})
    assert status == 421
    error = error_of(payload)
    assert error["code"] == "host_not_allowed" and "server.allowed_hosts" in error["message"]
    assert headers.getRawHeaders("content-type") == ["application/json"]
    assert inner.reached == []


def test_configured_hosts_a_port_pins_it_and_star_allows_all() -> None:
    stub, _ = guard(("localhost", "myhost.lan:8080", "other.lan"))
    assert call(stub, "GET", "http://myhost.lan:8080/")[0] == 200
    assert call(stub, "GET", "http://myhost.lan:9090/")[0] == 421
    assert call(stub, "GET", "http://other.lan:9090/")[0] == 200
    stub, _ = guard(("*",))
    assert call(stub, "GET", "http://anything.example:1/")[0] == 200


def test_ip_literals_pass_only_when_listening_on_every_interface() -> None:
    assert call(guard()[0], "GET", "http://192.168.1.5:1135/")[0] == 421
    stub, _ = guard(ip_literals=True)
    assert call(stub, "GET", "http://192.168.1.5:1135/")[0] == 200
    assert call(stub, "GET", "http://x/", headers={"Host": "[fe80::1]:1135"})[0] == 200
    assert call(stub, "GET", "http://rebound.example:1135/")[0] == 421


def test_a_second_host_header_is_checked_too() -> None:
    from twisted.web.test.requesthelper import DummyRequest

    request = DummyRequest([b"v1", b"models"])
    request.startedWriting = False
    request.requestHeaders.setRawHeaders(b"host", [b"localhost", b"evil.example"])
    inner = Recorder()
    body = BrowserGuard(inner, hosts=HostCheck(DEFAULT_HOSTS)).render(request)
    assert request.responseCode == 421 and b"host_not_allowed" in body and inner.reached == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://localhost:1135"},  # we serve no pages: not even our own origin
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors"},
        {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    ],
)
def test_a_browser_request_from_an_unlisted_origin_gets_403(headers: dict[str, str]) -> None:
    stub, inner = guard(origins=("http://localhost:3000",))
    status, payload, _ = call(
        stub, "POST", "http://localhost:1135/v1/chat/completions", data=b"{}",
        headers={"Content-Type": "application/json", **headers},
    )  # fmt: skip
    assert status == 403
    error = error_of(payload)
    assert error["code"] == "origin_not_allowed" and error["type"] == "permission_error"
    assert "server.cors_origins" in error["message"]
    assert inner.reached == []


@pytest.mark.parametrize("site", ["none", "same-origin"])
def test_typed_urls_and_same_origin_fetch_metadata_pass(site: str) -> None:
    stub, inner = guard()
    status, _, headers = call(
        stub, "GET", "http://localhost:1135/v1/models", headers={"Sec-Fetch-Site": site}
    )
    assert status == 200 and inner.reached == [b"/v1/models"]
    assert headers.getRawHeaders("access-control-allow-origin") is None


def test_an_allowed_origin_gets_cors_headers_on_its_answers() -> None:
    stub, inner = guard(origins=("http://localhost:3000",))
    status, _, headers = call(
        stub, "GET", "http://localhost:1135/v1/models",
        headers={"Origin": "http://localhost:3000", "Sec-Fetch-Site": "same-site"},
    )  # fmt: skip
    assert status == 200 and inner.reached == [b"/v1/models"]
    assert headers.getRawHeaders("access-control-allow-origin") == ["http://localhost:3000"]
    assert headers.getRawHeaders("vary") == ["Origin"]
    # Its JSON-only rule still holds, and the page can read why.
    status, payload, headers = call(
        stub, "POST", "http://localhost:1135/v1/chat/completions", data=b"hi",
        headers={"Origin": "http://localhost:3000", "Content-Type": "text/plain"},
    )  # fmt: skip
    assert status == 415 and error_of(payload)["code"] == "unsupported_media_type"
    assert headers.getRawHeaders("access-control-allow-origin") == ["http://localhost:3000"]


def test_an_allowed_origins_preflight_is_answered_here() -> None:
    stub, inner = guard(origins=("http://localhost:3000",))
    status, body, headers = call(
        stub, "OPTIONS", "http://localhost:1135/v1/chat/completions",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"},
    )  # fmt: skip
    assert status == 204 and body == b"" and inner.reached == []
    assert headers.getRawHeaders("access-control-allow-origin") == ["http://localhost:3000"]
    assert headers.getRawHeaders("access-control-allow-methods") == ["GET, POST, OPTIONS"]
    assert headers.getRawHeaders("access-control-allow-headers") == [
        "authorization, content-type, x-stainless-os"
    ]
    assert headers.getRawHeaders("access-control-max-age") == ["600"]
    # Header names that are not tokens are not echoed back.
    _, _, headers = call(
        stub, "OPTIONS", "http://localhost:1135/v1/models",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "a b"},
    )  # fmt: skip
    assert headers.getRawHeaders("access-control-allow-headers") is None


def test_an_unlisted_origins_preflight_is_refused() -> None:
    stub, inner = guard(origins=("http://localhost:3000",))
    status, payload, headers = call(
        stub, "OPTIONS", "http://localhost:1135/v1/chat/completions",
        headers={"Origin": "http://localhost:3001", "Access-Control-Request-Method": "POST"},
    )  # fmt: skip
    assert status == 403 and error_of(payload)["code"] == "origin_not_allowed"
    assert headers.getRawHeaders("access-control-allow-origin") is None and inner.reached == []


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b'{"model": "x"}'),
        ("text/plain;charset=UTF-8", b"{}"),
        ("application/x-www-form-urlencoded", b"a=1"),
        ("application/jsonp", b"{}"),
        (None, b"{}"),
        ("text/plain", b""),
    ],
)
def test_a_post_that_is_not_declared_json_gets_415(content_type: str | None, body: bytes) -> None:
    stub, inner = guard()
    headers = {} if content_type is None else {"Content-Type": content_type}
    status, payload, _ = call(
        stub, "POST", "http://127.0.0.1:1135/v1/chat/completions", data=body, headers=headers
    )
    assert status == 415
    error = error_of(payload)
    assert error["code"] == "unsupported_media_type"
    assert "application/json" in error["message"]
    assert inner.reached == []


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"{}"),
        ("Application/JSON; charset=utf-8", b"{}"),
        (None, b""),  # curl -X POST /unload: nothing to parse
    ],
)
def test_json_and_bodiless_posts_pass(content_type: str | None, body: bytes) -> None:
    stub, inner = guard()
    headers = {} if content_type is None else {"Content-Type": content_type}
    status, _, _ = call(stub, "POST", "http://127.0.0.1:1135/unload", data=body, headers=headers)
    assert status == 200 and inner.reached == [b"/unload"]


def test_an_upstream_upload_with_a_key_header_may_have_any_type() -> None:
    stub, inner = guard()
    url = "http://127.0.0.1:1135/upstream/whisper/v1/audio/transcriptions"
    form = {"Content-Type": "multipart/form-data; boundary=x"}
    upload = b'--x\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n--x--\r\n'
    for key in ({"Authorization": "Bearer k"}, {"X-Api-Key": "k"}):
        status, _, _ = call(stub, "POST", url, data=upload, headers={**form, **key})
        assert status == 200
    # Without such a header it is what any page could send: refused as before, and so is a
    # form with a key header sent to a JSON route (those parse JSON only).
    status, _, _ = call(stub, "POST", url, data=upload, headers=form)
    assert status == 415
    chat = "http://127.0.0.1:1135/v1/chat/completions"
    keyed_form = {"Content-Type": "application/x-www-form-urlencoded", "Authorization": "Bearer k"}
    status, _, _ = call(stub, "POST", chat, data=b"a=1", headers=keyed_form)
    assert status == 415
    assert inner.reached == [b"/upstream/whisper/v1/audio/transcriptions"] * 2


def test_get_needs_no_content_type() -> None:
    stub, _ = guard()
    headers = {"Content-Type": "text/plain"}
    assert call(stub, "GET", "http://127.0.0.1/health", headers=headers)[0] == 200


def test_routing_continues_below_the_guard() -> None:
    # The guard wraps a tree, not only a leaf: traversal resumes where the site left it.
    root, inner = Resource(), Recorder()
    root.putChild(b"v1", inner)
    stub = StubTreq(BrowserGuard(root, hosts=HostCheck(DEFAULT_HOSTS)))
    assert call(stub, "GET", "http://localhost/v1/models")[0] == 200
    assert inner.reached == [b"/v1/models"]


def test_a_refused_chat_request_never_reaches_the_router() -> None:
    clock = Clock()
    router = StubRouter(clock)
    routes = OpenAIRoutes(router, clock=clock)
    stub = StubTreq(BrowserGuard(routes.resource(), hosts=HostCheck(DEFAULT_HOSTS)))
    payload = json.dumps({"model": "known", "messages": [{"role": "user", "content": "hi"}]})
    status, _, _ = call(
        stub, "POST", "http://127.0.0.1:1135/v1/chat/completions", data=payload.encode(),
        headers={"Content-Type": "text/plain"},
    )  # fmt: skip
    assert status == 415 and router.forwarded == []
    status, _, _ = call(stub, "GET", "http://rebound.example:1135/v1/models")
    assert status == 421


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40))
def test_any_host_is_answered_or_refused_as_json(host: str) -> None:
    stub, inner = guard()
    status, payload, _ = call(stub, "GET", "http://x/v1/models", headers={"Host": host})
    if status == 421:
        error_of(payload)
        assert inner.reached == []
    else:
        assert status == 200
        name = host.lower()
        if not name.endswith("]"):  # drop the port, then the root label's dot
            name = name.rsplit(":", 1)[0].removesuffix(".")
        assert name in ("localhost", "127.0.0.1", "[::1]"), host
