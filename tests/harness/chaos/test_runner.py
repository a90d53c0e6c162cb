"""The run: a planted violation is caught and reproduced; a spawn-mode run is clean."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import HTTPConnectionPool
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from harness.chaos import ChaosOptions, run_chaos
from harness.chaos.kinds import DIALECT_NAMES
from harness.chaos.server_child import child_env
from harness.fake_llama import FakeConfig, start_fake_server
from tests.harness.chaos.support import tables_add_up

reactor: Any = _reactor  # the global reactor, untyped (its interfaces are provided)

# -- a planted violation: a proxy that finishes every stream with [DONE] --------------


def _lost_watch(request: Request) -> Callable[[], bool]:
    """Whether the client has gone, from the public ``notifyFinish()``: its errback
    runs inside ``connectionLost``, so watches made first know before other errbacks."""
    lost: list[object] = []
    request.notifyFinish().addErrback(lost.append)
    return lambda: bool(lost)


class BadProxy(Resource):
    """A broken stand-in for server_core: relays a fake's responses byte for byte, but
    when the upstream stream ends without ``[DONE]`` (reset, close, error event) it
    finishes the stream cleanly with ``data: [DONE]``."""

    isLeaf = True

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return b'{"status":"ok"}'

    def render_POST(self, request: Request) -> Any:
        headers: dict[bytes | str, bytes | str] = {"Content-Type": "application/json"}
        fault = request.getHeader(b"x-fault")
        if fault is not None:
            headers["X-Fault"] = fault.decode()
        assert request.content is not None
        gone = _lost_watch(request)
        d = treq.post(
            self.upstream + request.path.decode(),
            request.content.read(),
            headers=headers,
            pool=self.pool,
            unbuffered=True,
        )
        d.addCallback(self._relay, request, gone)
        d.addErrback(self._no_response, request, gone)
        request.notifyFinish().addErrback(lambda _: d.cancel())
        return NOT_DONE_YET

    def _no_response(self, _: Any, request: Request, gone: Callable[[], bool]) -> None:
        if not request.finished and not gone():
            request.setResponseCode(502)
            request.setHeader(b"content-type", b"application/json")
            request.write(b'{"error":{"message":"upstream failed","type":"server_error"}}')
            request.finish()

    def _relay(
        self, response: IResponse, request: Request, gone: Callable[[], bool]
    ) -> defer.Deferred[None]:
        request.setResponseCode(response.code)
        for name in (b"content-type",):
            for value in response.headers.getRawHeaders(name, []):
                request.setHeader(name, value)
        seen = bytearray()
        ctype = request.responseHeaders.getRawHeaders(b"content-type", [b""])[0]
        passed = self.relay_filter(ctype)

        def write(data: bytes) -> None:
            seen.extend(data)
            if not gone():
                request.write(passed(data))

        def end(_: Any) -> None:
            if gone() or request.finished:
                return
            if b"text/event-stream" in ctype or b"application/x-ndjson" in ctype:
                forged = self.forged_ending(request.path.decode(), bytes(seen))
                if forged is not None:
                    request.write(forged)
            request.finish()

        return treq.collect(response, write).addBoth(end)

    def relay_filter(self, content_type: bytes) -> Callable[[bytes], bytes]:
        """What the proxy makes of each piece of a response body (as it is, here)."""
        return lambda data: data

    def forged_ending(self, path: str, seen: bytes) -> bytes | None:
        """What the proxy writes when the upstream stream ended (or was lost) after
        ``seen``: ``data: [DONE]`` unless it came. THE BUG: a cut stream looks complete."""
        return None if b"[DONE]" in seen else b"data: [DONE]\n\n"


@asynccontextmanager
async def bad_proxy(proxy: type[BadProxy] = BadProxy) -> AsyncIterator[str]:
    fake = await start_fake_server(FakeConfig(alias="m", parallel=32, seed=0), reactor)
    port = reactor.listenTCP(0, Site(proxy(fake.url)), interface="127.0.0.1")
    try:
        yield f"http://127.0.0.1:{port.getHost().port}"
    finally:
        await port.stopListening()
        await fake.stop()


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_planted_violation_is_caught_and_reproduced_from_its_seed(tmp_path: Path) -> None:
    async with bad_proxy() as url:
        opts = ChaosOptions(target=url, model="m", requests=60, concurrency=8, seed=21)
        report = await run_chaos(opts, reactor, log=lambda line: None)
        assert report.exit_code == 1
        data = report.to_json()
        found = [
            v
            for v in data["violations"]
            if v["code"] in ("done_despite_fault", "done_incomplete", "done_after_error")
        ]
        assert found, data["violation_counts"]
        # A violation whose fault is certain (no p=) must come back on its own.
        v = next(v for v in found if "p=" not in v["spec"])
        assert "--only-request" in v["reproduce"] and f"--seed {opts.seed}" in v["reproduce"]
        out_json = tmp_path / "again.json"
        argv = [*v["reproduce_argv"], "--json", str(out_json)]
        out, err, code = await getProcessOutputAndValue(
            argv[0], argv[1:], env=child_env(), reactor=reactor
        )
        assert code == 1, (out + err).decode(errors="replace")[-2000:]
        again = json.loads(out_json.read_text())
        assert again["requests"] == 1 and again["only_request"] == v["index"]
        assert [(w["index"], w["code"]) for w in again["violations"]] == [
            (w["index"], w["code"]) for w in data["violations"] if w["index"] == v["index"]
        ]
        assert b"reproduce:" in out


# -- spawn mode -----------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_spawn_mode_run_has_no_violation() -> None:
    opts = ChaosOptions(
        requests=300,
        concurrency=16,
        seed=3,
        idle_timeout=1.0,
        header_timeout=1.5,
        delay_scale=0.5,
    )
    lines: list[str] = []
    report = await run_chaos(opts, reactor, log=lines.append)
    data = report.to_json()
    assert report.setup_error is None, report.setup_error
    assert data["violations"] == [], report.format_text()
    assert all(c["ok"] for c in data["checks"]), report.format_text()
    assert {c["name"] for c in data["checks"]} == {
        "upstream_slots",
        "health",
        "fds",
        "rss",
        "stop",
        "children",
    }
    tables_add_up(data)
    # The faults really bit: honest failures of every flavour were seen.
    assert data["outcomes"]["done"] > 100
    assert data["outcomes"]["http_error"] > 10 and data["outcomes"]["error_event"] > 10
    assert data["outcomes"]["disconnected"] > 0
    assert data["kinds"]["reset"]["outcomes"]["done"] < data["kinds"]["reset"]["requests"]
    assert any("300/300 requests" in line for line in lines)
    # server_core serves every dialect (probed): each was drawn and judged by its own rules.
    assert report.options.dialects == DIALECT_NAMES
    assert all(data["dialects"][d]["requests"] > 20 for d in DIALECT_NAMES), data["dialects"]
