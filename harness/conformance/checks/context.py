"""What every check sees: the target, the standard request bodies, and a memo.

Requests that several checks judge (the model list, one non-stream chat, one stream,
...) are made once per run and memoised on the ``Context``, so the whole suite costs a
few dozen requests. All HTTP goes through ``harness.client.stream_request``, which
classifies how each response ended; the checks only look at what it recorded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from harness.client import StreamResult, stream_request

__all__ = ["Context", "normalise_base"]

# The prompts are plain and short so any model answers quickly; the fixed seed and
# temperature 0 make deterministic servers repeatable.
PROMPT = "Say hello in a few words."
LONG_PROMPT = "Count from one to one hundred, writing every number out in words."
SEED = 42
MAX_TOKENS = 32
SMALL_LIMIT = 3  # max_tokens for the "length" checks

# The routes of the other APIs (llama-server's paths; a proxy serves them the same).
RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"
NATIVE = "/completion"


class Context:
    """What every check sees: the target and a memo of the requests it shares."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        reactor: Any = None,
        timeout: float = 30.0,
        lenient: bool = False,
    ) -> None:
        self.base_url = normalise_base(base_url)
        self.model = model
        self.api_key = api_key
        self.reactor = reactor
        self.timeout = timeout
        self.lenient = lenient
        self._memo: dict[str, StreamResult] = {}

    # -- requests ---------------------------------------------------------------------

    async def request(
        self,
        path: str,
        body: dict[str, Any] | bytes | None,
        *,
        method: str = "POST",
        headers: dict[str, str] | None = None,
        auth: bool = True,
        **kw: Any,
    ) -> StreamResult:
        """One request to ``path`` on the target, with the API key unless ``auth=False``."""
        send = dict(headers or {})
        if auth and self.api_key is not None:
            send.setdefault("Authorization", f"Bearer {self.api_key}")
        return await stream_request(
            self.base_url + path,
            body,
            method=method,
            headers=send,
            timeout=self.timeout,
            idle_timeout=self.timeout,
            reactor=self.reactor,
            **kw,
        )

    async def memo(self, key: str, make: Callable[[], Awaitable[StreamResult]]) -> StreamResult:
        """The result of ``make()``, made once per run under ``key``.

        Checks run one after the other, so a plain dict suffices.
        """
        if key not in self._memo:
            self._memo[key] = await make()
        return self._memo[key]

    def chat_body(self, **extra: Any) -> dict[str, Any]:
        """The standard chat body (short prompt, temperature 0, seed) updated with ``extra``."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": PROMPT}],
            "temperature": 0,
            "seed": SEED,
            "max_tokens": MAX_TOKENS,
        }
        body.update(extra)
        return body

    async def chat(self, key: str, **extra: Any) -> StreamResult:
        """A memoised chat request with the standard body plus ``extra``."""
        return await self.memo(
            key, lambda: self.request("/v1/chat/completions", self.chat_body(**extra))
        )

    # The requests several checks share.

    async def models(self) -> StreamResult:
        """``GET /v1/models``, once per run."""
        return await self.memo("models", lambda: self.request("/v1/models", None, method="GET"))

    async def chat_nonstream(self) -> StreamResult:
        """The standard non-stream chat, once per run."""
        return await self.chat("chat", stream=False)

    async def chat_nonstream_again(self) -> StreamResult:
        """The same non-stream chat a second time, for the determinism checks."""
        await self.chat_nonstream()  # strictly after the first, never interleaved
        return await self.chat("chat.again", stream=False)

    async def chat_stream(self) -> StreamResult:
        """The standard stream chat, once per run."""
        return await self.chat("stream", stream=True)

    async def chat_stream_usage(self) -> StreamResult:
        """The standard stream chat with ``include_usage``, once per run."""
        return await self.chat("stream.usage", stream=True, stream_options={"include_usage": True})

    # The Responses, Anthropic Messages and llama.cpp native requests several checks share.

    def responses_body(self, **extra: Any) -> dict[str, Any]:
        """The standard Responses body (``input``, ``max_output_tokens``) plus ``extra``."""
        body: dict[str, Any] = {
            "model": self.model,
            "input": PROMPT,
            "temperature": 0,
            "seed": SEED,
            "max_output_tokens": MAX_TOKENS,
        }
        body.update(extra)
        return body

    def messages_body(self, **extra: Any) -> dict[str, Any]:
        """The standard Anthropic Messages body (``max_tokens`` is required there)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": PROMPT}],
            "temperature": 0,
            "max_tokens": MAX_TOKENS,
        }
        body.update(extra)
        return body

    def native_body(self, **extra: Any) -> dict[str, Any]:
        """The standard llama.cpp ``/completion`` body (``prompt``, ``n_predict``)."""
        body: dict[str, Any] = {"prompt": PROMPT, "temperature": 0, "seed": SEED}
        body["n_predict"] = MAX_TOKENS
        body.update(extra)
        return body

    async def responses(self, *, stream: bool) -> StreamResult:
        """The standard ``POST /v1/responses``, stream or not, once per run each."""
        body = self.responses_body(stream=stream)
        return await self.memo(f"responses.{stream}", lambda: self.request(RESPONSES, body))

    async def messages(self, *, stream: bool) -> StreamResult:
        """The standard ``POST /v1/messages``, stream or not, once per run each."""
        body = self.messages_body(stream=stream)
        return await self.memo(f"messages.{stream}", lambda: self.request(MESSAGES, body))

    async def native(self, *, stream: bool) -> StreamResult:
        """The standard ``POST /completion``, stream or not, once per run each."""
        body = self.native_body(stream=stream)
        return await self.memo(f"native.{stream}", lambda: self.request(NATIVE, body))

    def ok_statuses(self, strict: set[int]) -> set[int]:
        """Strict: exactly ``strict``; lenient: any 4xx but 401/403 (auth is its own check)."""
        if self.lenient:
            return set(range(400, 500)) - {401, 403}
        return strict


def normalise_base(url: str) -> str:
    """``http://h:p``, ``http://h:p/``, ``http://h:p/v1`` -> ``http://h:p`` (no slash)."""
    base = url.strip().rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return base
