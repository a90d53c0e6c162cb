"""DefaultRouterState: resolution, request_params, remote model names, keys, leases."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from zope.interface import implementer
from zope.interface.verify import verifyObject

from server_core.aliases import DefaultAliasStore, LocalAlias, RemoteTarget
from server_core.errors import AliasNotFound, ContextError, UpstreamError
from server_core.interfaces import ILease, IRouterState
from server_core.router_state import DefaultRouterState


class RecordingClient:
    """Stands in for UpstreamClient: records what would be sent."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail = fail

    async def post_json(self, url: str, body: dict[str, Any], **kw: Any) -> str:
        self.sent.append({"url": url, "body": body, **kw})
        if self.fail:
            raise UpstreamError("upstream down")
        return "response"

    async def close(self) -> None:
        pass


@implementer(ILease)
class FakeLease:
    def __init__(self) -> None:
        self.alias = "local"
        self.base_url = "http://127.0.0.1:5555"
        self.chat_template_error: str | None = None
        self.released = 0

    def release(self) -> None:
        self.released += 1

    def when_lost(self) -> defer.Deferred[None]:
        return defer.Deferred()


class FakeContext:
    def __init__(self) -> None:
        self.lease = FakeLease()
        self.closed = False

    def acquire(self, alias: Any) -> defer.Deferred[FakeLease]:
        return defer.succeed(self.lease)

    def close(self) -> defer.Deferred[None]:
        self.closed = True
        return defer.succeed(None)


LOCAL = LocalAlias("local", "/m/local.gguf", "user", {"temperature": 0.1, "max_tokens": 5})
EXTERNAL = RemoteTarget("ext", "external", "http://127.0.0.1:8080/v1", None, None, {"top_p": 0.5})
API = RemoteTarget("api", "api", "https://api.example/v1", "sk-secret", "gpt-x", {})


class Store:
    def __init__(self, targets: dict[str, Any]) -> None:
        self.targets = targets

    def resolve(self, model: str) -> Any:
        if model not in self.targets:
            raise AliasNotFound(model)
        return self.targets[model]

    def list_models(self) -> list[dict[str, Any]]:
        return [{"id": name} for name in self.targets]

    def local_aliases(self) -> list[Any]:
        return []


def make(**kw: Any) -> tuple[DefaultRouterState, RecordingClient, FakeContext]:
    client = RecordingClient(**kw)
    context = FakeContext()
    store = Store({"local": LOCAL, "ext": EXTERNAL, "openai/gpt-x": API})
    return DefaultRouterState(store, client, context), client, context  # type: ignore[arg-type]


def test_verify_object() -> None:
    router, _, _ = make()
    assert verifyObject(IRouterState, router)
    assert verifyObject(IRouterState, DefaultRouterState(DefaultAliasStore(), RecordingClient()))  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_external_fills_only_unset_params() -> None:
    router, client, _ = make()
    await router.forward("/chat/completions", {"model": "ext", "top_p": 0.9, "messages": []})
    await router.forward("/chat/completions", {"model": "ext", "messages": []})
    assert client.sent[0]["body"]["top_p"] == 0.9
    assert client.sent[1]["body"]["top_p"] == 0.5
    assert client.sent[0]["url"] == "http://127.0.0.1:8080/v1/chat/completions"
    assert client.sent[0]["api_key"] is None


@pytest_twisted.ensureDeferred
async def test_api_alias_sends_its_own_key_and_model_name() -> None:
    router, client, _ = make()
    await router.forward("/chat/completions", {"model": "openai/gpt-x", "messages": []})
    sent = client.sent[0]
    assert sent["url"] == "https://api.example/v1/chat/completions"
    assert sent["body"]["model"] == "gpt-x" and sent["api_key"] == "sk-secret"


@pytest_twisted.ensureDeferred
async def test_local_alias_uses_a_lease_released_with_the_reply() -> None:
    router, client, context = make()
    reply = await router.forward("/chat/completions", {"model": "local", "messages": []})
    sent = client.sent[0]
    assert sent["url"] == "http://127.0.0.1:5555/v1/chat/completions"
    assert sent["body"]["temperature"] == 0.1 and sent["body"]["model"] == "local"
    assert context.lease.released == 0  # held until the response has ended
    reply.release()
    reply.release()
    assert context.lease.released == 1


@pytest_twisted.ensureDeferred
async def test_lease_released_when_upstream_fails_before_headers() -> None:
    router, _, context = make(fail=True)
    with pytest.raises(UpstreamError):
        await router.forward("/chat/completions", {"model": "local", "messages": []})
    assert context.lease.released == 1


@pytest_twisted.ensureDeferred
async def test_unknown_model_and_no_context() -> None:
    router, _, _ = make()
    with pytest.raises(AliasNotFound):
        await router.forward("/chat/completions", {"model": "nope"})
    bare = DefaultRouterState(Store({"local": LOCAL}), RecordingClient())  # type: ignore[arg-type]
    with pytest.raises(ContextError, match=r"llama_server\.executable"):
        await bare.forward("/chat/completions", {"model": "local"})


def test_get_model() -> None:
    router, _, _ = make()
    assert router.get_model("ext") == {"id": "ext"}
    assert router.get_model("zzz") is None


@pytest_twisted.ensureDeferred
async def test_only_api_aliases_are_sent_as_remote_apis() -> None:
    # An API alias is someone else's service: the client's test-only headers stay here.
    router, client, _ = make()
    for model in ("openai/gpt-x", "ext", "local"):
        await router.forward("/chat/completions", {"model": model, "messages": []})
    kinds = [sent.get("remote_api", False) for sent in client.sent]
    assert kinds == [True, False, False]
