"""Which llama-server native routes server_core passes through, and why the rest are not.

llama-server serves more than the OpenAI API: llama.cpp's web UI and many scripts speak
``/completion``, ``/tokenize``, ``/apply-template``, ``/props``. Each route listed here is
proxied to the alias the request names (JSON ``model``, or ``?model=`` on GET; the default
model when it names none) and answered with what that alias's llama-server answers,
streams included (``OpenAIRoutes`` registers them; ``IRouterState.respond_native`` does
the work). The un-prefixed ``/completions`` and ``/embeddings`` are native too, as on
llama-server itself (its ``/completions`` is ``/completion``, its ``/embeddings`` the
non-OpenAI embeddings); ``/chat/completions`` and ``/models`` are the OpenAI ones.

Left out, because a proxy shared by several clients must not pass them on:
``POST /slots/{id}?action=save|restore|erase`` (writes and reads files on the server's
host, drops another client's cache), ``POST /props`` (changes server-wide state),
``POST /lora-adapters`` (changes the adapters every client's requests use),
``POST /v1/chat/completions/control`` (steers a request by id, which may be another
client's), ``/metrics`` (server_core's own metrics are another issue's), and llama-server's
router-mode routes (``/models/load``, ``/models/unload``, ``/models/sse``, ``POST
/models``, ``DELETE /models``): here server_core is the router. Also left out:
``/v1/audio/transcriptions`` (a multipart upload, not a JSON body; reachable through
``/upstream/`` with an ``Authorization`` or ``X-Api-Key`` header, see ``browser_guard``),
``/v1/stream``, ``/v1/streams/lookup`` (resuming a stream by id across connections,
which may be another client's), and ``/cors-proxy``, ``/tools`` (llama-server
fetches URLs and runs tools on its host for the web UI).

The OpenAI Responses (``/v1/responses``, ``/responses``) and Anthropic Messages
(``/v1/messages``) routes are not native: they are ``OpenAIRoutes``' own, with their
stream dialects (``server_core.sse.dialects``).
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from server_core.errors import BadRequest

__all__ = ["NATIVE_GET", "NATIVE_POST", "query_model"]

NATIVE_POST: tuple[str, ...] = (
    "/completion",
    "/completions",
    "/tokenize",
    "/detokenize",
    "/apply-template",
    "/infill",
    "/embedding",
    "/embeddings",
    "/rerank",
    "/reranking",
    "/v1/rerank",
    "/v1/reranking",
    "/v1/messages/count_tokens",
    "/v1/responses/input_tokens",
    "/responses/input_tokens",
    "/v1/chat/completions/input_tokens",
    "/chat/completions/input_tokens",
)
"""Native POST routes: a JSON body, passed on with ``model`` set to the alias."""

NATIVE_GET: tuple[str, ...] = ("/props", "/slots", "/lora-adapters")
"""Native GET routes: read-only state of the alias's server, named by ``?model=``."""


def query_model(request: Request) -> dict[str, Any]:
    """A GET request's ``?model=`` as a body (``{}`` when absent: the default model)."""
    values = (request.args or {}).get(b"model") or []
    if not values:
        return {}
    if len(values) > 1:
        raise BadRequest("Give '?model=' once.", param="model", code="invalid_value")
    try:
        model = values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("'?model=' is not valid UTF-8.", param="model") from None
    return {"model": model}
