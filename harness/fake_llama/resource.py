"""``FakeLlamaResource``: the twisted.web resource in front of every route.

It reproduces llama-server's middleware order (CORS headers, loading 503, API
key, then routing or 404), turns ``RequestError`` into llama-server's JSON error
and never lets a traceback page out. The handlers live in ``routes_*.py`` and
``fault_control.py``; shapes follow llama.cpp's tools/server sources.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

from harness.fake_llama import routes_generation as gen
from harness.fake_llama import routes_info as info
from harness.fake_llama import routes_text as text
from harness.fake_llama._http import error_body, json_response
from harness.fake_llama._server_view import ServerView
from harness.fake_llama.fault_control import fault_control
from harness.fake_llama.generate import RequestError

__all__ = ["GENERATION_PATHS", "PUBLIC_PATHS", "FakeLlamaResource"]

Handler = Callable[[ServerView, Request], Any]

PUBLIC_PATHS = frozenset({"/health", "/v1/health", "/models", "/v1/models", "/"})

_GET: dict[str, Handler] = {
    "/health": info.get_health,
    "/v1/health": info.get_health,
    "/metrics": info.get_metrics,
    "/props": info.get_props,
    "/models": info.get_models,
    "/v1/models": info.get_models,
    "/slots": info.get_slots,
    "/": info.get_index,
}
_POST: dict[str, Handler] = {
    "/props": info.post_props,
    "/completion": gen.post_completion_native,
    "/completions": gen.post_completion_native,
    "/v1/completions": gen.post_completion_oai,
    "/chat/completions": gen.post_chat,
    "/v1/chat/completions": gen.post_chat,
    "/v1/responses": gen.post_responses,
    "/responses": gen.post_responses,
    "/v1/messages": gen.post_messages,
    "/v1/responses/input_tokens": text.post_responses_input_tokens,
    "/responses/input_tokens": text.post_responses_input_tokens,
    "/v1/messages/count_tokens": text.post_count_tokens,
    "/embedding": gen.post_embeddings_native,
    "/embeddings": gen.post_embeddings_native,
    "/v1/embeddings": gen.post_embeddings_oai,
    "/tokenize": text.post_tokenize,
    "/detokenize": text.post_detokenize,
    "/apply-template": text.post_apply_template,
    "/infill": text.post_infill,
    "/rerank": text.post_rerank,
    "/reranking": text.post_rerank,
    "/v1/rerank": text.post_rerank,
    "/v1/reranking": text.post_rerank,
}
_ROUTES: dict[bytes, dict[str, Handler]] = {b"GET": _GET, b"POST": _POST}

# The requests counted in Stats.requests (they reach a generation handler).
GENERATION_PATHS = frozenset(
    {
        "/completion",
        "/completions",
        "/v1/completions",
        "/chat/completions",
        "/v1/chat/completions",
        "/v1/responses",
        "/responses",
        "/v1/messages",
        "/embedding",
        "/embeddings",
        "/v1/embeddings",
    }
)


class FakeLlamaResource(Resource):
    """Every path goes through ``render``: loading gate, API key, routing."""

    isLeaf = True

    def __init__(self, server: ServerView) -> None:
        super().__init__()
        self.fake = server  # not "server": twisted.web's Resource has that attribute

    def render(self, request: Request) -> Any:
        """Answer any method and path, as llama-server's HTTP layer does."""
        request.setHeader(b"Server", b"llama.cpp")
        origin = request.getHeader(b"origin")
        request.setHeader(b"Access-Control-Allow-Origin", origin or b"")
        path = (request.path or b"/").decode("utf-8", "replace")
        try:
            return self._dispatch(request, path)
        except RequestError as e:
            return json_response(request, e.status, e.body())
        except Exception as e:  # never a traceback page: llama-server answers 500 JSON
            self.fake.log(f"srv    operator(): got exception: {e!r}")
            return json_response(request, 500, error_body(500, str(e), "server_error"))

    def _dispatch(self, request: Request, path: str) -> Any:
        server = self.fake
        method = request.method or b"GET"
        server.debug(f"srv  log_server_r: request: {method.decode()} {path}")
        if method == b"OPTIONS":
            return _preflight(request)
        if path == "/_fault":
            return fault_control(server, request)
        # llama-server's middleware order: loading state, then the API key.
        if server.state != "ready":
            return json_response(request, 503, error_body(503, "Loading model"))
        if server.config.api_keys and path not in PUBLIC_PATHS and not self._key_ok(request):
            server.log("srv  operator(): unauthorized: Invalid API Key")
            return json_response(request, 401, error_body(401, "Invalid API Key"))
        # cpp-httplib answers HEAD with the GET handler (Twisted drops the body).
        handler = _ROUTES.get(b"GET" if method == b"HEAD" else method, {}).get(path)
        if handler is None:
            return json_response(request, 404, error_body(404, "File Not Found"))
        if path in GENERATION_PATHS:
            server.stats.requests += 1
        return handler(server, request)

    def _key_ok(self, request: Request) -> bool:
        value = request.getHeader(b"authorization") or request.getHeader(b"x-api-key") or b""
        key = value.decode("utf-8", "replace")
        if key.startswith("Bearer "):
            key = key[len("Bearer ") :]
        return key in self.fake.config.api_keys


def _preflight(request: Request) -> bytes:
    """A CORS preflight: allow everything, like llama-server."""
    request.setHeader(b"Access-Control-Allow-Credentials", b"true")
    request.setHeader(b"Access-Control-Allow-Methods", b"GET, POST")
    request.setHeader(b"Access-Control-Allow-Headers", b"*")
    request.setHeader(b"Content-Type", b"text/html")
    return b""
