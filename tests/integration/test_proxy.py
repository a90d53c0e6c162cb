"""server_core in front of the fake llama-server over real sockets: one test per invariant."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.protocol import Factory, Protocol

from harness.client import StreamResult, stream_request
from harness.fake_llama.generate import expected_text
from harness.fake_llama.server import FakeConfig
from tests.integration.stack import reactor, stack
from tests.polling import until

pytestmark = pytest.mark.timeout(30)

CHAT = "/v1/chat/completions"


def chat_body(stream: bool = True, max_tokens: int = 12, **extra: Any) -> dict[str, Any]:
    return {
        "model": "fake",
        "messages": [{"role": "user", "content": "tell me about twisted"}],
        "stream": stream,
        "max_tokens": max_tokens,
        **extra,
    }


async def post(url: str, body: dict[str, Any], fault: str | None = None, **kw: Any) -> StreamResult:
    headers = {"X-Fault": fault} if fault else None
    return await stream_request(url + CHAT, body, headers=headers, timeout=10, **kw)


@pytest_twisted.ensureDeferred
async def test_stream_relayed_complete_and_identical_to_direct() -> None:
    async with stack() as s:
        body = chat_body()
        proxied = await post(s.url, body)
        direct = await post(s.fake.url, body)
        assert proxied.outcome == "done", proxied.summary()
        tokens, finish = expected_text(body)
        assert proxied.text == direct.text == "".join(tokens)
        assert proxied.finish_reason == finish
        assert proxied.model == "fake" and len(proxied.ids) == 1
        headers = proxied.headers
        assert headers["content-type"][0].startswith("text/event-stream")
        assert headers["cache-control"] == ["no-cache"]
        assert headers["x-accel-buffering"] == ["no"]


@pytest_twisted.ensureDeferred
async def test_non_stream_relayed() -> None:
    async with stack() as s:
        body = chat_body(stream=False)
        result = await post(s.url, body)
        assert result.outcome == "done" and result.status == 200
        assert result.text == "".join(expected_text(body)[0])


@pytest.mark.parametrize(
    "fault",
    [
        "reset_after=4",
        "close_after=4",
        "error_after=4",
        "legacy_error_after=4",
        "malformed_after=4",
    ],
)
@pytest_twisted.ensureDeferred
async def test_upstream_loss_is_an_error_event_never_done(fault: str) -> None:
    async with stack() as s:
        direct = await post(s.fake.url, chat_body(), fault)
        # The fault really breaks the stream (a malformed event alone may still end in [DONE]).
        assert direct.outcome != "done" or direct.invalid_json
        result = await post(s.url, chat_body(), fault)
        assert result.outcome == "error_event", result.summary()
        assert not result.done_after_error and not result.after_done
        assert result.error and result.error.get("message")
        # Every frame before the error was relayed whole.
        assert len(result.chunks) >= 3


@pytest_twisted.ensureDeferred
async def test_stall_past_idle_timeout_is_an_error_event() -> None:
    upstream = "  upstream: {idle_timeout: 0.3}"
    async with stack(server_yaml=upstream) as s:
        result = await post(s.url, chat_body(), "stall_after=3")
        assert result.outcome == "error_event", result.summary()
        assert "0.3 s" in result.error["message"]


@pytest_twisted.ensureDeferred
async def test_client_disconnect_cancels_upstream_generation_quickly() -> None:
    async with stack() as s:
        before = s.fake.cancelled
        result = await post(
            s.url, chat_body(max_tokens=200), "token_delay=20ms", disconnect_after=3
        )
        assert result.outcome == "disconnected"
        waited = await until(lambda: s.fake.cancelled > before, timeout=2.0)
        assert waited < 0.1, f"upstream cancelled only after {waited:.3f} s"


@pytest_twisted.ensureDeferred
async def test_keepalive_comments_while_upstream_is_silent() -> None:
    async with stack(server_yaml="  keepalive_interval: 0.1") as s:
        result = await post(s.url, chat_body(max_tokens=3), "ttft=600ms")
        assert result.outcome == "done"
        assert result.comments >= 3


@pytest.mark.parametrize(("injected", "expected"), [(503, 503), (500, 502), (404, 404)])
@pytest_twisted.ensureDeferred
async def test_upstream_http_errors_normalized(injected: int, expected: int) -> None:
    async with stack() as s:
        result = await post(s.url, chat_body(), f"status={injected}")
        assert result.outcome == "http_error" and result.status == expected
        assert result.error and {"message", "type", "code", "param"} <= set(result.error)


@pytest_twisted.ensureDeferred
async def test_client_authorization_never_forwarded() -> None:
    # The fake demands this key; a client sending it to server_core must not get it
    # through, because the client's credentials are for server_core only.
    async with stack(FakeConfig(alias="fake", api_keys=("upstream-secret",))) as s:
        result = await stream_request(
            s.url + CHAT,
            chat_body(stream=False),
            headers={"Authorization": "Bearer upstream-secret", "X-Api-Key": "upstream-secret"},
            timeout=10,
        )
        # Forwarded, the key would have passed; the fake's 401 is about server_core's own
        # (missing) key, so the client gets a 502 that does not blame its credentials.
        assert result.status == 502
        assert result.error and result.error["code"] == "upstream_auth_failed"


@pytest_twisted.ensureDeferred
async def test_unknown_model_404() -> None:
    async with stack() as s:
        result = await post(s.url, {**chat_body(), "model": "nope"})
        assert result.status == 404 and result.error["code"] == "model_not_found"


@pytest_twisted.ensureDeferred
async def test_many_concurrent_streams_all_complete() -> None:
    from twisted.internet import defer

    async with stack(FakeConfig(alias="fake", parallel=8)) as s:
        bodies = [chat_body(max_tokens=8, seed=i) for i in range(24)]
        results = await defer.gatherResults(
            [defer.ensureDeferred(post(s.url, b, "token_delay=2ms")) for b in bodies]
        )
        for body, result in zip(bodies, results, strict=True):
            assert result.outcome == "done"
            assert result.text == "".join(expected_text(body)[0])


@pytest_twisted.ensureDeferred
async def test_upstream_hang_before_headers_is_504_after_header_timeout() -> None:
    async with stack(server_yaml="  upstream: {header_timeout: 0.3}") as s:
        start = reactor.seconds()
        result = await post(s.url, chat_body(), "hang")
        assert result.outcome == "http_error" and result.status == 504
        assert result.error["type"] == "timeout_error"
        assert reactor.seconds() - start < 3


@pytest_twisted.ensureDeferred
async def test_upstream_refusing_connections_is_502_without_details() -> None:
    from server_core.service import make_service
    from tests.integration.procs import free_port
    from tests.integration.stack import config_for

    service = make_service(config_for(f"http://127.0.0.1:{free_port()}"), reactor)
    listener = list(service)[-1]
    service.startService()
    port = (await listener.when_listening).getHost().port
    try:
        result = await post(f"http://127.0.0.1:{port}", chat_body())
        assert result.outcome == "http_error" and result.status == 502
        assert "connection refused" in result.error["message"]
        assert "127.0.0.1" not in result.error["message"]
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_request_body_over_the_cap_is_413() -> None:
    async with stack(server_yaml="  max_body_bytes: 1000") as s:
        big = chat_body(stream=False)
        big["messages"][0]["content"] = "x" * 5000
        result = await post(s.url, big)
        assert result.status == 413
        assert result.error["code"] == "request_too_large"
        small = await post(s.url, chat_body(stream=False))
        assert small.outcome == "done"


@pytest_twisted.ensureDeferred
async def test_completions_and_embeddings_relayed() -> None:
    async with stack() as s:
        text = await stream_request(
            s.url + "/v1/completions",
            {"model": "fake", "prompt": "once upon", "max_tokens": 5, "stream": True},
            timeout=10,
        )
        assert text.outcome == "done" and text.text
    async with stack(FakeConfig(alias="fake", embeddings=True)) as s:
        emb = await stream_request(
            s.url + "/v1/embeddings", {"model": "fake", "input": "hello"}, timeout=10
        )
        assert emb.outcome == "done" and emb.status == 200
        assert len(emb.json_body["data"][0]["embedding"]) > 0


class OneRequestPerConnection(Protocol):
    """Answers the first request on a connection; closes (FIN) when a second one arrives,
    as a server does when it drops an idle keep-alive connection just as it is reused."""

    served = 0
    dropped = 0

    def connectionMade(self) -> None:
        self.buffer = b""
        self.answered = False

    def dataReceived(self, data: bytes) -> None:
        if self.answered:
            OneRequestPerConnection.dropped += 1
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self.buffer += data
        head, sep, body = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if len(body) < length:
            return
        self.answered = True
        OneRequestPerConnection.served += 1
        payload = b'{"object":"chat.completion","choices":[{"message":{"content":"ok"}}]}'
        self.transport.write(  # type: ignore[union-attr]
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(payload)).encode()
            + b"\r\n\r\n"
            + payload
        )


@pytest_twisted.ensureDeferred
async def test_stale_keepalive_connection_is_retried_once() -> None:
    from server_core.service import make_service
    from tests.integration.stack import config_for

    upstream = reactor.listenTCP(
        0, Factory.forProtocol(OneRequestPerConnection), interface="127.0.0.1"
    )
    service = make_service(config_for(f"http://127.0.0.1:{upstream.getHost().port}"), reactor)
    listener = list(service)[-1]
    service.startService()
    port = (await listener.when_listening).getHost().port
    try:
        for _ in range(3):
            result = await post(f"http://127.0.0.1:{port}", chat_body(stream=False))
            assert result.outcome == "done", result.summary()
        # The 2nd and 3rd requests first went to a pooled connection the upstream dropped.
        assert OneRequestPerConnection.dropped >= 1
        assert OneRequestPerConnection.served == 3
    finally:
        await service.stopService()
        await upstream.stopListening()


@pytest_twisted.ensureDeferred
async def test_external_replies_carry_the_model_name_the_client_asked_for() -> None:
    # The upstream calls its model something else: the client asked for "fake".
    async with stack(FakeConfig(alias="its-own-name", parallel=4)) as s:
        direct = await post(s.fake.url, chat_body(stream=False))
        assert direct.json_body["model"] == "its-own-name"
        streamed = await post(s.url, chat_body())
        assert streamed.outcome == "done", streamed.summary()
        assert {c.get("model") for c in streamed.chunks} == {"fake"}
        whole = await post(s.url, chat_body(stream=False))
        assert whole.status == 200 and whole.json_body["model"] == "fake"
        assert whole.text == direct.text
