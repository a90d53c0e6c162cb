"""Text utility routes: ``/tokenize``, ``/detokenize``, ``/apply-template``, the token
counts of the Responses and Anthropic APIs, and the
abilities the fake's "model" lacks (``/infill``, ``/rerank``: 501)."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from harness.fake_llama._http import error_body, json_bool, json_response, read_json
from harness.fake_llama._server_view import ServerView
from harness.fake_llama.generate import VOCABULARY, RequestError, token_id, tokenize
from harness.fake_llama.messages_api import anthropic_to_chat
from harness.fake_llama.responses_api import responses_to_chat
from harness.fake_llama.validate import validate_chat

__all__ = [
    "post_apply_template",
    "post_count_tokens",
    "post_detokenize",
    "post_infill",
    "post_rerank",
    "post_responses_input_tokens",
    "post_tokenize",
]


def post_tokenize(server: ServerView, request: Request) -> bytes:
    """Word ids (``with_pieces``: with the words); unknown words are remembered."""
    body = read_json(request)
    tokens: list[Any] = []
    if isinstance(body, dict) and "content" in body:
        content = body["content"]
        text = content if isinstance(content, str) else " ".join(map(str, content))
        with_pieces = json_bool(body, "with_pieces")
        for word in tokenize(text):
            tid = token_id(word)
            server.vocab_extra.setdefault(tid, word)
            tokens.append({"id": tid, "piece": word} if with_pieces else tid)
    return json_response(request, 200, {"tokens": tokens})


def post_detokenize(server: ServerView, request: Request) -> bytes:
    """Ids back to words: the vocabulary's, or those ``/tokenize`` has seen."""
    body = read_json(request)
    words: list[str] = []
    if isinstance(body, dict) and isinstance(body.get("tokens"), list):
        for tid in body["tokens"]:
            if not isinstance(tid, int) or isinstance(tid, bool):
                msg = "[json.exception.type_error.302] type must be number"
                raise RequestError(500, msg, "server_error")
            if 10 <= tid < 10 + len(VOCABULARY):
                words.append(VOCABULARY[tid - 10])
            else:
                words.append(server.vocab_extra.get(tid, ""))
    return json_response(request, 200, {"content": " ".join(w for w in words if w)})


def post_apply_template(server: ServerView, request: Request) -> bytes:
    """The chat request's prompt, rendered by the chat template in force."""
    body = read_json(request)
    validate_chat(body)
    prompt = server.chat_template.render(body["messages"])
    return json_response(request, 200, {"prompt": prompt})


def post_count_tokens(server: ServerView, request: Request) -> bytes:
    """``/v1/messages/count_tokens``: the converted request's prompt size."""
    chat = anthropic_to_chat(read_json(request))
    return json_response(request, 200, {"input_tokens": _prompt_tokens(server, chat)})


def post_responses_input_tokens(server: ServerView, request: Request) -> bytes:
    """``/v1/responses/input_tokens``: the same count, with OpenAI's ``object``."""
    chat = responses_to_chat(read_json(request))
    body = {"input_tokens": _prompt_tokens(server, chat), "object": "response.input_tokens"}
    return json_response(request, 200, body)


def _prompt_tokens(server: ServerView, chat: dict[str, Any]) -> int:
    # The count a generation of this body reports as its prompt tokens.
    validate_chat(chat)
    return len(tokenize(server.chat_template.render(chat["messages"])))


def post_infill(server: ServerView, request: Request) -> bytes:
    """501: the "model" has no fill-in-the-middle tokens."""
    msg = (
        "Infill is not supported by this model: prefix token is missing. "
        "suffix token is missing. middle token is missing. "
    )
    return json_response(request, 501, error_body(501, msg))


def post_rerank(server: ServerView, request: Request) -> bytes:
    """501, as a server started without ``--reranking``."""
    msg = "This server does not support reranking. Start it with `--reranking`"
    return json_response(request, 501, error_body(501, msg))
