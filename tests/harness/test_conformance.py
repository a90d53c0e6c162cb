"""The conformance suite against the fake llama-server, server_core and planted violations.

- server_core (in front of the in-process fake) must pass every check.
- The fake imitates llama-server, which is not fully OpenAI-conformant: the checks it
  fails are pinned in ``FAKE_FAILS`` with the reason (docs/conformance.md lists them).
- A tiny twisted.web server plants one violation at a time; the check that looks for it
  must fail and its neighbours must still pass (checks discriminate).
- The CLI and the pytest plugin run as child processes against in-process servers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from harness.cli import SUBCOMMANDS, main, register_subcommand
from harness.conformance import (
    CHECKS,
    FAIL,
    NA,
    PASS,
    Report,
    TargetUnreachable,
    run_conformance,
    select_checks,
)
from harness.conformance.checks import normalise_base
from harness.fake_llama import FakeConfig, start_fake_server
from server_core.sse import DONE_FRAME, encode_comment, encode_event
from tests.integration.stack import stack

reactor: Any = _reactor
REPO = Path(__file__).resolve().parents[2]

# What the fake llama-server (like llama-server itself) fails, and why.
FAKE_FAILS = {
    # llama-server has no GET /v1/models/{id} route: 404 "File Not Found".
    "models.retrieve",
    # llama-server serves its one model whatever "model" says (or when it is missing).
    "errors.missing_model",
    "errors.unknown_model",
    # llama-server accepts an empty conversation and generates from the empty prompt.
    "errors.empty_messages",
    # llama-server answers a JSON parse error with 500 (nlohmann's exception text).
    "errors.invalid_json",
}
AUTH_CHECKS = {"auth.missing_key", "auth.wrong_key"}
KEY = "conformance-key"


def names(report: Report, result: str) -> set[str]:
    return {r.name for r in report.results if r.result == result}


def table(report: Report) -> str:
    return "\n" + report.format_table(width=160)


# -- the registry ----------------------------------------------------------------------------


def test_registry_has_at_least_30_named_described_checks() -> None:
    assert len(CHECKS) >= 30
    all_names = [c.name for c in CHECKS]
    assert len(set(all_names)) == len(all_names)
    for c in CHECKS:
        assert c.description and "." in c.name and c.name == c.name.strip()


def test_docs_name_every_check() -> None:
    doc = (REPO / "docs" / "conformance.md").read_text()
    assert [c.name for c in CHECKS if f"| `{c.name}` |" not in doc] == []


def test_select_checks_by_name_and_group_prefix() -> None:
    assert [c.name for c in select_checks(["models.shape"])] == ["models.shape"]
    group = {c.name for c in select_checks(["chat.stream"])}
    assert "chat.stream.role_first" in group and "chat.stream.done_last" in group
    assert not any(n.startswith("chat.nonstream") for n in group)
    assert len(select_checks(None)) == len(CHECKS)
    with pytest.raises(ValueError, match=r"nope, chat\.str"):
        select_checks(["models", "nope", "chat.str"])


def test_normalise_base() -> None:
    for url in ("http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/", " http://h:1 "):
        assert normalise_base(url) == "http://h:1"
    assert normalise_base("http://h:1/api/v1") == "http://h:1/api"


# -- the fake llama-server, directly ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_fake_llama_server_fails_only_its_known_deviations() -> None:
    fake = await start_fake_server(FakeConfig(alias="fake", parallel=4), reactor)
    seen: list[tuple[int, int, str]] = []
    try:
        report = await run_conformance(
            fake.url,
            "fake",
            reactor=reactor,
            progress=lambda done, total, res: seen.append((done, total, res.name)),
        )
    finally:
        await fake.stop()
    assert names(report, FAIL) == FAKE_FAILS, table(report)
    assert names(report, NA) == AUTH_CHECKS, table(report)
    assert len(report.passed) == len(CHECKS) - len(FAKE_FAILS) - len(AUTH_CHECKS)
    assert not report.ok
    # The reasons are in the details.
    assert "500" in report.result("errors.invalid_json").detail
    assert "status 200" in report.result("errors.unknown_model").detail
    # The fake's ping fault made comment frames, and the stream still completed.
    assert "comments, done" in report.result("chat.stream.keepalive_comments").detail
    assert [s[0] for s in seen] == list(range(1, len(CHECKS) + 1))
    assert {s[1] for s in seen} == {len(CHECKS)}


@pytest_twisted.ensureDeferred
async def test_fake_llama_server_with_api_key_passes_auth_checks() -> None:
    fake = await start_fake_server(FakeConfig(alias="fake", api_keys=(KEY,)), reactor)
    try:
        report = await run_conformance(
            fake.url, "fake", KEY, reactor, only=["auth", "models.shape", "chat.stream.done_last"]
        )
        wrong = await run_conformance(
            fake.url, "fake", "not-the-key", reactor, only=["models", "chat.nonstream.shape"]
        )
    finally:
        await fake.stop()
    assert names(report, PASS) == AUTH_CHECKS | {"models.shape", "chat.stream.done_last"}, table(
        report
    )
    # With a wrong key generation is refused (llama-server keeps /v1/models public).
    assert names(wrong, FAIL) == {"models.retrieve", "chat.nonstream.shape"}, table(wrong)
    assert "status=401" in wrong.result("chat.nonstream.shape").detail


# -- server_core in front of the fake --------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_server_core_passes_every_check() -> None:
    # A short keep-alive interval so the stream with slow tokens carries comments, and an
    # API key so the auth checks apply: nothing is n/a.
    yaml = f"  keepalive_interval: 0.01\n  api_keys: [{KEY}]"
    async with stack(server_yaml=yaml) as s:
        report = await run_conformance(s.url + "/v1/", "fake", KEY, reactor)
    assert report.ok, table(report)
    assert len(report.passed) == len(CHECKS), table(report)
    assert report.result("errors.unknown_model").detail.startswith("404")
    assert report.result("routes.method_not_allowed").detail.startswith("405")


@pytest_twisted.ensureDeferred
async def test_server_core_default_keepalive_makes_the_comment_check_not_applicable() -> None:
    # server_core drops the upstream's pings and sends its own only after 15 s of silence.
    async with stack() as s:
        report = await run_conformance(s.url, "fake", reactor=reactor, only=["chat.stream"])
    assert names(report, NA) == {"chat.stream.keepalive_comments"}, table(report)
    assert not report.failed, table(report)


@pytest_twisted.ensureDeferred
async def test_unreachable_target_errbacks() -> None:
    port = _free_port()
    with pytest.raises(TargetUnreachable, match="no HTTP answer"):
        await run_conformance(f"http://127.0.0.1:{port}", "m", reactor=reactor)
    with pytest.raises(ValueError, match="unknown check"):
        await run_conformance(f"http://127.0.0.1:{port}", "m", reactor=reactor, only=["x.y"])


# -- planted violations ----------------------------------------------------------------------


def _chunk(delta: dict[str, Any], finish: str | None = None, cid: str = "c-1") -> bytes:
    obj = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "planted",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return encode_event(json.dumps(obj))


class PlantedApi(Resource):
    """A minimal OpenAI server whose streams break in one chosen way (``mode``).

    ``ok``: correct; ``nodone``: the body ends cleanly without ``[DONE]``; ``errdone``:
    an error event then ``[DONE]`` (llama-server's old dialect); ``afterdone``: a chunk
    after ``[DONE]``; ``twoids``: the id changes mid-stream. Invalid requests get 422
    (a FastAPI-style status) so the strictness levels can be told apart.
    """

    isLeaf = True

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        if request.path == b"/v1/models":
            return json.dumps(
                {"object": "list", "data": [{"id": "planted", "object": "model"}]}
            ).encode()
        request.setResponseCode(404)
        return b'{"error": {"message": "no such route"}}'

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        try:
            body = json.loads(request.content.read())
            ok = isinstance(body, dict) and "model" in body and "messages" in body
        except ValueError:
            ok = False
        if not ok:
            request.setResponseCode(422)
            request.setHeader(b"content-type", b"application/json")
            return b'{"error": {"message": "unprocessable"}}'
        request.setHeader(b"content-type", b"text/event-stream")
        out = [_chunk({"role": "assistant", "content": None}), _chunk({"content": "Hi"})]
        if self.mode == "errdone":
            out.append(encode_event(json.dumps({"error": {"message": "boom", "code": 500}})))
            out.append(DONE_FRAME)
        else:
            out.append(_chunk({"content": " there"}, cid="c-2" if self.mode == "twoids" else "c-1"))
            out.append(_chunk({}, "stop"))
            out.append(encode_comment("keep-alive"))
            if self.mode != "nodone":
                out.append(DONE_FRAME)
            if self.mode == "afterdone":
                out.append(_chunk({"content": "late"}))
        return b"".join(out)


class _Tracking(WrappingFactory):
    """Knows the open server-side connections so teardown can wait for them to close."""

    idle: Deferred[None] | None = None

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        super().unregisterProtocol(p)
        if not self.protocols and self.idle is not None:
            d, self.idle = self.idle, None
            d.callback(None)

    def wait_idle(self) -> Deferred[None]:
        if not self.protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self.idle = d
        for p in list(self.protocols):
            p.transport.loseConnection()
        return d


@asynccontextmanager
async def planted(mode: str) -> AsyncIterator[str]:
    factory = _Tracking(Site(PlantedApi(mode)))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        yield f"http://127.0.0.1:{port.getHost().port}"
    finally:
        await port.stopListening()
        await factory.wait_idle()


STREAM_CHECKS = [
    "chat.stream.content_type",
    "chat.stream.framing",
    "chat.stream.role_first",
    "chat.stream.single_id",
    "chat.stream.object",
    "chat.stream.created_model",
    "chat.stream.delta_shape",
    "chat.stream.finish_reason",
    "chat.stream.done_last",
    "chat.stream.no_error_event",
    "chat.stream.no_usage_by_default",
]


@pytest.mark.parametrize(
    ("mode", "failing", "detail"),
    [
        ("ok", set(), ""),
        ("nodone", {"chat.stream.done_last"}, "no [DONE]"),
        # No finish chunk before the error either: the finish_reason check sees 0.
        (
            "errdone",
            {"chat.stream.no_error_event", "chat.stream.finish_reason"},
            "followed by [DONE]",
        ),
        ("afterdone", {"chat.stream.done_last"}, "after [DONE]"),
        ("twoids", {"chat.stream.single_id"}, "2 distinct ids"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_planted_stream_violation_fails_exactly_its_check(
    mode: str, failing: set[str], detail: str
) -> None:
    async with planted(mode) as url:
        report = await run_conformance(url, "planted", reactor=reactor, only=STREAM_CHECKS)
    assert names(report, FAIL) == failing, table(report)
    assert names(report, PASS) == set(STREAM_CHECKS) - failing, table(report)
    assert all(detail in report.result(n).detail for n in failing if "finish" not in n)


@pytest_twisted.ensureDeferred
async def test_strictness_levels_for_error_statuses() -> None:
    only = ["errors.missing_model", "errors.missing_messages", "errors.invalid_json"]
    async with planted("ok") as url:
        strict = await run_conformance(url, "planted", reactor=reactor, only=only)
        lenient = await run_conformance(url, "planted", reactor=reactor, only=only, lenient=True)
    assert names(strict, FAIL) == set(only), table(strict)
    assert "status 422 (want 400" in strict.result("errors.invalid_json").detail
    assert names(lenient, PASS) == set(only), table(lenient)
    assert lenient.to_dict()["strictness"] == "lenient"


# -- the CLI ---------------------------------------------------------------------------------


class _Collect(ProcessProtocol):
    def __init__(self) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(getattr(reason.value, "exitCode", None) or 0)


async def run_child(args: list[str], cwd: Path, timeout: float = 30.0) -> tuple[int, str, str]:
    """Run ``python ARGS`` as a child without blocking the reactor (our servers run on it)."""
    proto = _Collect()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = reactor.spawnProcess(proto, sys.executable, [sys.executable, *args], env, str(cwd))
    killer = reactor.callLater(timeout, proc.signalProcess, signal.SIGKILL)
    try:
        code = await proto.ended
    finally:
        if killer.active():
            killer.cancel()
    return code, proto.out.decode(), proto.err.decode()


def cli(*args: str) -> list[str]:
    return ["-m", "harness.cli", "conformance", *args]


@pytest_twisted.ensureDeferred
async def test_cli_exit_0_against_server_core_with_table_and_json(tmp_path: Path) -> None:
    out_file = tmp_path / "report.json"
    async with stack(server_yaml="  keepalive_interval: 0.01") as s:
        code, out, err = await run_child(
            cli("--target", s.url, "--model", "fake", "--json", str(out_file)), tmp_path
        )
    assert code == 0, out + err
    assert "chat.stream.role_first" in out and " pass " in out
    assert f"[ 1/{len(CHECKS)}] pass models.shape" in err  # progress on stderr
    report = json.loads(out_file.read_text())
    assert report["ok"] is True and report["strictness"] == "strict"
    assert report["summary"] == {
        "pass": len(CHECKS) - 2,
        "fail": 0,
        "n/a": 2,
        "total": len(CHECKS),
    }
    first = report["checks"][0]
    assert set(first) == {"name", "description", "result", "detail", "duration"}
    assert {c["name"] for c in report["checks"] if c["result"] == "n/a"} == AUTH_CHECKS


@pytest_twisted.ensureDeferred
async def test_cli_exit_1_against_a_planted_violation(tmp_path: Path) -> None:
    out_file = tmp_path / "r.json"
    async with planted("nodone") as url:
        code, out, err = await run_child(
            cli(
                "--target",
                url,
                "--model",
                "planted",
                "--only",
                "chat.stream",
                "--json",
                str(out_file),
            ),
            tmp_path,
        )
    assert code == 1, out + err
    checks = {c["name"]: c for c in json.loads(out_file.read_text())["checks"]}
    assert checks["chat.stream.done_last"]["result"] == "fail"
    assert "no [DONE]" in checks["chat.stream.done_last"]["detail"]
    assert checks["chat.stream.role_first"]["result"] == "pass"
    assert all(name.startswith("chat.stream.") for name in checks)


@pytest_twisted.ensureDeferred
async def test_cli_exit_2_when_unreachable_or_misused(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    code, out, err = await run_child(cli("--target", url, "--model", "m"), tmp_path)
    assert (code, out) == (2, ""), err
    assert "target unreachable" in err
    code, _, err = await run_child(cli("--target", url, "--model", "m", "--only", "nope"), tmp_path)
    assert code == 2 and "unknown check name(s): nope" in err


def test_cli_usage_errors_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["conformance", "--target", "http://127.0.0.1:1"]) == 2
    assert "missing --model" in capsys.readouterr().err
    assert main(["conformance", "--target", "x", "--model", "m", "--timeout", "0"]) == 2
    assert main(["conformance", "--bogus"]) == 2
    assert (
        main(["conformance", "--target", "x", "--model", "m", "--json", "/no/such/d/r.json"]) == 2
    )
    assert "no such directory" in capsys.readouterr().err
    assert main(["conformance", "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == len(CHECKS) and listed[0].startswith("models.shape ")
    assert main(["--help"]) == 0
    assert "conformance" in capsys.readouterr().out


def test_cli_registry_accepts_another_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    def add_parser(subparsers: Any) -> Any:
        p = subparsers.add_parser("echo-test", help="test only")
        p.add_argument("--code", type=int, default=0)
        p.set_defaults(run=lambda args: print("ran") or args.code)
        return p

    register_subcommand("echo-test", add_parser)
    try:
        assert main(["echo-test", "--code", "7"]) == 7
        assert capsys.readouterr().out == "ran\n"
        assert main(["--help"]) == 0
        assert "echo-test" in capsys.readouterr().out
    finally:
        del SUBCOMMANDS["echo-test"]


# -- the pytest plugin -----------------------------------------------------------------------

PLUGIN_TEST = """
def test_uses_the_report(conformance_report):
    assert conformance_report.result("models.shape").result == "pass"
    assert conformance_report.result("models.retrieve").result == "fail"
"""


@pytest_twisted.ensureDeferred
async def test_pytest_plugin_makes_one_item_per_check(tmp_path: Path) -> None:
    (tmp_path / "test_mine.py").write_text(PLUGIN_TEST)
    fake = await start_fake_server(FakeConfig(alias="fake"), reactor)
    try:
        code, out, err = await run_child(
            [
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-rA",
                "--conformance-target",
                fake.url,
                "--conformance-model",
                "fake",
                "--conformance-only",
                "models,auth",
            ],
            tmp_path,
        )
    finally:
        await fake.stop()
    assert code == 1, out + err  # models.retrieve fails against the fake
    assert "1 failed, 3 passed, 2 skipped" in out, out
    assert "PASSED conformance::models.shape" in out
    assert "FAILED conformance::models.retrieve" in out
    assert "models.retrieve failed: expected a 200 JSON body" in out
    assert "auth.missing_key n/a: no --api-key given" in out, out
    assert "PASSED test_mine.py::test_uses_the_report" in out


# -- helpers ---------------------------------------------------------------------------------


def _free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
