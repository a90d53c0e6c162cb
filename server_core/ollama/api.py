"""OllamaApi: Ollama's operations over the router, the shared context and the alias store.

Generation (``chat``, ``generate``, ``embed``, ``embeddings``) translates the request
(``request_bodies``), forwards it through ``IRouterState.forward`` (which resolves the
alias and holds the lease), and answers in Ollama's shape: a whole object, or an NDJSON
stream relayed by ``NdjsonRelay``. The lease is released once the answer has ended. The
listings (``tags``, ``show``, ``ps``) are built by ``catalog``. Every failure is a
``ServerCoreError``; the web handler writes it as ``{"error": "..."}`` with its status.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.web.server import Request

from server_core.aliases import LocalAlias
from server_core.errors import (
    AliasNotFound,
    BadRequest,
    NotFound,
    UpstreamError,
    normalize_upstream_error,
)
from server_core.interfaces import IAliasStore, IRouterState, ISharedContext
from server_core.metrics import cause_of, record_of
from server_core.ollama.catalog import ModelCard, card_for, sees_images
from server_core.ollama.gguf import GgufCache
from server_core.ollama.keep_alive import capped
from server_core.ollama.relay import NDJSON, NdjsonRelay, ndjson_line
from server_core.ollama.reply_bodies import (
    Durations,
    StreamLines,
    chat_reply,
    created_at,
    embed_reply,
    embeddings_reply,
    generate_reply,
)
from server_core.ollama.request_bodies import (
    Translated,
    chat_request,
    embed_request,
    embeddings_request,
    generate_request,
    model_of,
)
from server_core.reply import ReplyTracker
from server_core.upstream import BodyIncomplete, read_complete_body

__all__ = ["DEFAULT_VERSION", "OllamaApi"]

DEFAULT_VERSION = "0.12.3"
"""What ``/api/version`` reports: VS Code Copilot wants at least 0.6.4."""

_MAX_JSON_REPLY = 64 * 1024 * 1024  # a batch of embeddings is the largest whole answer
_MAX_ERROR_BODY = 64 * 1024


class OllamaApi:
    """Ollama's API over server_core's router (module doc)."""

    def __init__(
        self,
        router: IRouterState,
        *,
        clock: IReactorTime,
        aliases: IAliasStore | None = None,
        context: ISharedContext | None = None,
        idle_timeout: float | None = 300.0,
        max_keep_alive: float | None = None,
        version: str = DEFAULT_VERSION,
    ) -> None:
        self._router = router
        self._clock = clock
        self._aliases = aliases
        self._context = context
        self._idle_timeout = idle_timeout
        self._max_keep_alive = max_keep_alive
        self.version = version
        self._gguf = GgufCache()
        self._last_end: dict[str, float] = {}

    # -- names ---------------------------------------------------------------------

    def _name(self, model: str) -> str:
        """The served name: Ollama clients add ``:latest`` to names that carry no tag."""
        if self._router.get_model(model) is None and model.endswith(":latest"):
            bare = model.removesuffix(":latest")
            if self._router.get_model(bare) is not None:
                return bare
        return model

    def _local(self, name: str) -> LocalAlias | None:
        if self._aliases is None:
            return None
        try:
            found = self._aliases.resolve(name)
        except AliasNotFound:
            return None
        return found if isinstance(found, LocalAlias) else None

    def _card(self, model: str) -> ModelCard:
        name = self._name(model)
        entry = self._router.get_model(name)
        if entry is None and self._local(name) is None:
            raise NotFound(f"model '{model}' not found; /api/tags lists the models served here.")
        created = float((entry or {}).get("created") or self._clock.seconds())
        return card_for(name, self._local(name), self._gguf, created)

    # -- listings ------------------------------------------------------------------

    def tags(self) -> dict[str, Any]:
        """``GET /api/tags``: every model ``/v1/models`` lists."""
        models = []
        for entry in self._router.list_models():
            name = str(entry["id"])
            created = float(entry.get("created") or 0)
            models.append(card_for(name, self._local(name), self._gguf, created).tag())
        return {"models": models}

    def show(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/show``: details, model_info (from the GGUF header), capabilities."""
        return self._card(model_of(body)).show()

    def ps(self) -> dict[str, Any]:
        """``GET /api/ps``: the managed models whose llama-server runs now."""
        if self._context is None:
            return {"models": []}
        now = self._clock.seconds()
        models = []
        for row in self._context.running():
            name = str(row.get("alias"))
            if row.get("state") in ("queued", "stopping", "stopped", "failed"):
                continue
            ttl = self._ttl(name)
            if ttl is None:
                continue  # stopped since running() was asked
            base = now if row.get("in_flight") else self._last_end.get(name, now)
            expires = None if ttl < 0 else base + ttl
            models.append(self._card(name).running(expires, now))
        return {"models": models}

    def _ttl(self, name: str) -> float | None:
        if self._context is None:
            return None
        ttl: float | None = self._context.keep_alive(name)
        return ttl

    # -- generation ----------------------------------------------------------------

    async def chat(self, request: Request, body: dict[str, Any], tracker: ReplyTracker) -> Any:
        """``POST /api/chat``."""
        return await self._generate(request, chat_request(body), "chat", tracker)

    async def generate(self, request: Request, body: dict[str, Any], tracker: ReplyTracker) -> Any:
        """``POST /api/generate``."""
        return await self._generate(request, generate_request(body), "generate", tracker)

    async def embed(self, request: Request, body: dict[str, Any], tracker: ReplyTracker) -> bytes:
        """``POST /api/embed``."""
        translated = embed_request(body)
        started = self._clock.seconds()
        reply, answered = await self._forward(request, translated, tracker)
        try:
            whole = await self._whole(reply, tracker)
        finally:
            self._ended(reply, translated)
        durations = Durations(self._clock.seconds() - started, answered - started)
        return _json(embed_reply(whole, translated.model, durations))

    async def embeddings(
        self, request: Request, body: dict[str, Any], tracker: ReplyTracker
    ) -> bytes:
        """``POST /api/embeddings`` (the older one-prompt form)."""
        translated = embeddings_request(body)
        reply, _ = await self._forward(request, translated, tracker)
        try:
            whole = await self._whole(reply, tracker)
        finally:
            self._ended(reply, translated)
        return _json(embeddings_reply(whole))

    async def _generate(
        self, request: Request, translated: Translated, kind: str, tracker: ReplyTracker
    ) -> bytes | None:
        started = self._clock.seconds()
        alias = self._local(self._name(translated.model))
        if translated.images and alias is not None and not sees_images(alias):
            raise BadRequest(
                f"The model '{translated.model}' cannot read images: its llama-server runs "
                "without a multimodal projector (--mmproj). Send text only, or use a model "
                "whose /api/show capabilities include vision.",
                param="images",
            )
        if _loads_only(translated, kind):
            answer = await self._load_only(translated, kind, alias, tracker)
            return self._answer(request, answer, translated.stream)
        reply, answered = await self._forward(request, translated, tracker)
        try:
            if translated.stream and _is_event_stream(reply):
                lines = StreamLines(kind, translated.model)
                await self._relay(request, reply, lines, started, tracker)
                return None
            whole = await self._whole(reply, tracker)
        finally:
            self._ended(reply, translated)
        now = self._clock.seconds()
        durations = Durations(now - started, answered - started)
        make = chat_reply if kind == "chat" else generate_reply
        answer = make(whole, translated.model, now, durations)
        # An upstream may answer a stream request whole: then it is a one-line stream.
        return self._answer(request, answer, translated.stream)

    def _answer(self, request: Request, answer: dict[str, Any], stream: bool) -> bytes:
        request.setHeader(b"content-type", NDJSON if stream else b"application/json")
        return ndjson_line(answer) if stream else _json(answer)

    async def _forward(
        self, request: Request, translated: Translated, tracker: ReplyTracker
    ) -> tuple[Any, float]:
        """Forward, set the keep_alive, and fail on an upstream error status."""
        body = {**translated.body, "model": self._name(translated.model)}
        try:
            forwarded: Any = self._router.forward(translated.endpoint, body, request.requestHeaders)
            reply: Any = await tracker.waiting(defer.ensureDeferred(forwarded))
        except AliasNotFound:
            raise NotFound(
                f"model '{translated.model}' not found; /api/tags lists the models served here."
            ) from None
        answered = self._clock.seconds()
        record = record_of(request)
        if record is not None:
            record.served(translated.model, getattr(reply, "alias", None))
            request.setHeader(b"x-served-by", record.served_by)
        try:
            self._keep_alive(body["model"], translated.keep_alive)
            if not 200 <= reply.response.code < 300:
                if record is not None:
                    record.upstream_refused()
                raise await self._upstream_error(reply, tracker)
        except BaseException:
            reply.release()
            raise
        return reply, answered

    def _keep_alive(self, name: str, seconds: float | None) -> None:
        alias = self._local(name)
        if seconds is None or alias is None or self._context is None:
            return
        self._context.keep_alive(alias.name, capped(seconds, self._max_keep_alive))

    def _ended(self, reply: Any, translated: Translated) -> None:
        reply.release()
        alias = self._local(self._name(translated.model))
        if alias is not None:
            self._last_end[alias.name] = self._clock.seconds()

    async def _load_only(
        self, translated: Translated, kind: str, alias: LocalAlias | None, tracker: ReplyTracker
    ) -> dict[str, Any]:
        """An empty prompt loads the model (and ``keep_alive: 0`` unloads it), as Ollama."""
        if alias is None and self._router.get_model(self._name(translated.model)) is None:
            raise NotFound(
                f"model '{translated.model}' not found; /api/tags lists the models served here."
            )
        reason = "load"
        if alias is not None and self._context is not None:
            if translated.keep_alive == 0:
                await self._context.stop(alias.name)
                reason = "unload"
            else:
                lease: Any = await tracker.waiting(self._context.acquire(alias))
                try:
                    self._keep_alive(alias.name, translated.keep_alive)
                finally:
                    lease.release()
                self._last_end[alias.name] = self._clock.seconds()
        answer: dict[str, Any] = {"model": translated.model}
        answer["created_at"] = created_at(self._clock.seconds())
        if kind == "chat":
            answer["message"] = {"role": "assistant", "content": ""}
        else:
            answer["response"] = ""
        answer.update(done=True, done_reason=reason)
        return answer

    async def _relay(
        self,
        request: Request,
        reply: Any,
        lines: StreamLines,
        started: float,
        tracker: ReplyTracker,
    ) -> None:
        relay = NdjsonRelay(
            request,
            reply.response,
            lines,
            clock=self._clock,
            upstream_name=reply.upstream_name,
            started=started,
            idle_timeout=self._idle_timeout,
            on_error=_recorder(request),
        )
        tracker.add_stream(relay)  # type: ignore[arg-type]
        try:
            await relay.relay()
        finally:
            tracker.discard_stream(relay)  # type: ignore[arg-type]
        return None

    # -- whole upstream bodies -------------------------------------------------------

    def _read(self, reply: Any, limit: int) -> defer.Deferred[bytes]:
        return read_complete_body(
            reply.response, limit=limit, idle_timeout=self._idle_timeout, clock=self._clock
        )

    async def _upstream_error(self, reply: Any, tracker: ReplyTracker) -> Exception:
        try:
            raw = await tracker.waiting(self._read(reply, _MAX_ERROR_BODY))
        except BodyIncomplete:
            raw = b""  # the status alone still says what happened
        return normalize_upstream_error(reply.response.code, raw, upstream=reply.upstream_name)

    async def _whole(self, reply: Any, tracker: ReplyTracker) -> dict[str, Any]:
        name = reply.upstream_name
        try:
            raw = await tracker.waiting(self._read(reply, _MAX_JSON_REPLY))
            document = json.loads(raw)
        except BodyIncomplete as exc:
            raise UpstreamError(f"{name}: incomplete response ({exc})") from None
        except ValueError:
            raise UpstreamError(f"{name}: the response is not valid JSON") from None
        if not isinstance(document, dict):
            raise UpstreamError(f"{name}: the response is not a JSON object")
        return document


def _loads_only(translated: Translated, kind: str) -> bool:
    """Ollama's load request: a chat without messages, a generate without a prompt."""
    body = translated.body
    if translated.endpoint == "/completions":
        return not body.get("prompt")
    messages = body.get("messages") or []
    if kind == "chat":
        return not messages
    return messages[-1] == {"role": "user", "content": ""}


def _is_event_stream(reply: Any) -> bool:
    content_type = (reply.response.headers.getRawHeaders(b"content-type") or [b""])[0]
    return b"text/event-stream" in content_type.lower()


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def _recorder(request: Request) -> Any:
    """Notes a stream's error ending in the request's metrics record (if it has one)."""
    record = record_of(request)
    if record is None:
        return None
    record.stream = True

    def on_error(error: Any, cause: str | None) -> None:
        record.error_event(cause or cause_of(error))

    return on_error
