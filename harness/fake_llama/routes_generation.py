"""Generation routes: chat, OpenAI and native completions, Responses, Anthropic, embeddings.

Each validates the body like llama-server, plans the text and the faults, and
hands the request to a job that answers later (``NOT_DONE_YET``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.web.server import NOT_DONE_YET, Request

from harness.fake_llama._http import error_body, json_response, read_json
from harness.fake_llama._server_view import ServerView
from harness.fake_llama.completion import CompletionJob
from harness.fake_llama.embedding import EmbeddingJob
from harness.fake_llama.fault_control import new_request_rng, request_faults
from harness.fake_llama.generate import RequestError, plan_generation, tokenize
from harness.fake_llama.messages_api import anthropic_to_chat
from harness.fake_llama.plain import PlainCompletionJob
from harness.fake_llama.responses_api import responses_to_chat
from harness.fake_llama.stream import StreamCompletionJob
from harness.fake_llama.validate import (
    check_field_types,
    require_native_prompt,
    require_oai_prompt,
    validate_chat,
)

__all__ = [
    "post_chat",
    "post_completion_native",
    "post_completion_oai",
    "post_embeddings_native",
    "post_embeddings_oai",
    "post_messages",
    "post_responses",
]


def post_chat(server: ServerView, request: Request) -> Any:
    """``/v1/chat/completions``."""
    return _completion(server, request, "chat", validate_chat)


def post_completion_oai(server: ServerView, request: Request) -> Any:
    """``/v1/completions``."""
    return _completion(server, request, "cmpl", require_oai_prompt)


def post_completion_native(server: ServerView, request: Request) -> Any:
    """``/completion``: llama.cpp's own shape, a stream without ``[DONE]``."""
    return _completion(server, request, "native", require_native_prompt)


def post_responses(server: ServerView, request: Request) -> Any:
    """``/v1/responses``, ``/responses``: converted to a chat request, then generated."""
    return _completion(server, request, "resp", validate_chat, responses_to_chat)


def post_messages(server: ServerView, request: Request) -> Any:
    """``/v1/messages`` (Anthropic): converted to a chat request, then generated."""
    return _completion(server, request, "anthropic", validate_chat, anthropic_to_chat)


def _completion(
    server: ServerView,
    request: Request,
    kind: str,
    check: Callable[[Any], None],
    convert: Callable[[Any], dict[str, Any]] | None = None,
) -> Any:
    if server.config.embeddings:
        msg = "This server does not support completions. Start it without `--embeddings`"
        return json_response(request, 501, error_body(501, msg))
    body = read_json(request)
    if convert is not None:
        body = convert(body)
    check(body)
    return _generate(server, request, kind, body)


def _generate(server: ServerView, request: Request, kind: str, body: dict[str, Any]) -> Any:
    check_field_types(body)
    rng = new_request_rng(server)
    faults = request_faults(server, request, rng)
    # A chat request is counted by its rendered template; its text never depends on it.
    chat = kind in ("chat", "resp", "anthropic")
    prompt = server.chat_template.render(body["messages"]) if chat else None
    gen = plan_generation(
        body,
        server.config.seed,
        n_ctx=server.config.n_ctx_slot,
        n_predict_default=server.config.n_predict,
        prompt=prompt,
    )
    job_type: type[CompletionJob] = (
        StreamCompletionJob if body.get("stream") is True else PlainCompletionJob
    )
    job_type(server, request, kind, body, gen, faults, rng).start()
    return NOT_DONE_YET


def post_embeddings_oai(server: ServerView, request: Request) -> Any:
    """``/v1/embeddings``: the OpenAI list (unless the body uses ``content``)."""
    return _embeddings(server, request, oai=True)


def post_embeddings_native(server: ServerView, request: Request) -> Any:
    """``/embedding``, ``/embeddings``: llama.cpp's native list."""
    return _embeddings(server, request, oai=False)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


def _embedding_request(body: Any, oai: bool) -> tuple[list[str], bool, bool]:
    """(texts, oai, base64) of an embeddings body, with llama-server's 400s."""
    if isinstance(body, dict) and "input" in body:
        prompt = body["input"]
    elif isinstance(body, dict) and "content" in body:
        oai = False  # "content" is not OAI compatible
        prompt = body["content"]
    else:
        raise RequestError(400, '"input" or "content" must be provided', "invalid_request_error")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        msg = "The format to return the embeddings in. Can be either float or base64"
        raise RequestError(400, msg, "invalid_request_error")
    many = isinstance(prompt, list) and bool(prompt) and all(isinstance(p, str) for p in prompt)
    texts = [_as_text(p) for p in (prompt if many else [prompt])]
    if any(not tokenize(t) for t in texts):
        raise RequestError(400, "Input content cannot be empty", "invalid_request_error")
    return texts, oai, fmt == "base64"


def _embeddings(server: ServerView, request: Request, *, oai: bool) -> Any:
    if not server.config.embeddings:
        msg = "This server does not support embeddings. Start it with `--embeddings`"
        return json_response(request, 501, error_body(501, msg))
    texts, oai, use_base64 = _embedding_request(read_json(request), oai)
    rng = new_request_rng(server)
    faults = request_faults(server, request, rng)
    EmbeddingJob(server, request, texts, oai=oai, use_base64=use_base64, faults=faults).start()
    return NOT_DONE_YET
