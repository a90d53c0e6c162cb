"""Routes that describe the server: health, models, props, slots, metrics, the web page.

Each is ``handler(server, request) -> bytes`` with llama-server's shapes; none
depends on a request body, except ``POST /props`` which only answers whether it
is allowed.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from harness.fake_llama._http import FINGERPRINT, error_body, json_response
from harness.fake_llama._server_view import ServerView
from harness.fake_llama.config import generation_settings
from harness.fake_llama.generate import EMBEDDING_DIM, VOCABULARY

__all__ = [
    "get_health",
    "get_index",
    "get_metrics",
    "get_models",
    "get_props",
    "get_slots",
    "post_props",
]


def get_health(server: ServerView, request: Request) -> bytes:
    """``/health``: the route readiness pollers use (503 while loading, in the resource)."""
    return json_response(request, 200, {"status": "ok"})


def get_index(server: ServerView, request: Request) -> bytes:
    """``/``: a stand-in for the web UI, or 404 with ``--no-webui``."""
    if not server.config.webui:
        return json_response(request, 404, error_body(404, "File Not Found"))
    request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
    return b"<!doctype html><title>fake llama-server</title><p>fake llama-server</p>\n"


def _model_info(server: ServerView) -> dict[str, Any]:
    cfg = server.config
    return {
        "id": cfg.model_alias,
        "aliases": cfg.aliases,
        "tags": [],
        "object": "model",
        "created": int(server.reactor.seconds()),
        "owned_by": "llamacpp",
        "meta": {
            "vocab_type": 1,
            "n_vocab": len(VOCABULARY) + 10,
            "n_ctx": cfg.n_ctx_slot,
            "n_ctx_train": cfg.ctx_size,
            "n_embd": EMBEDDING_DIM,
            "n_params": 1_000_000,
            "size": 1_000_000,
        },
    }


def get_models(server: ServerView, request: Request) -> bytes:
    """``/v1/models``: the Ollama-style ``models`` list and the OpenAI ``data`` list."""
    name = server.config.model_alias
    details = {
        "parent_model": "",
        "format": "gguf",
        "family": "",
        "families": [""],
        "parameter_size": "",
        "quantization_level": "",
    }
    model = {
        "name": name,
        "model": name,
        "modified_at": "",
        "size": "",
        "digest": "",
        "type": "model",
        "description": "",
        "tags": [""],
        "capabilities": ["completion"],
        "parameters": "",
        "details": details,
    }
    body = {"models": [model], "object": "list", "data": [_model_info(server)]}
    return json_response(request, 200, body)


def get_props(server: ServerView, request: Request) -> bytes:
    """``GET /props``: settings, slots, endpoints and the chat template in force."""
    cfg = server.config
    props = {
        "default_generation_settings": {
            "params": generation_settings(cfg),
            "n_ctx": cfg.n_ctx_slot,
        },
        "total_slots": server.slots.size,
        "model_alias": cfg.model_alias,
        "model_path": cfg.model_path or "",
        "modalities": {"vision": False, "audio": False},
        "endpoint_slots": cfg.slots_endpoint,
        "endpoint_props": cfg.props_endpoint,
        "endpoint_metrics": cfg.metrics,
        "webui": cfg.webui,
        "chat_template": server.chat_template.source,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "build_info": FINGERPRINT,
        "is_sleeping": False,
    }
    return json_response(request, 200, props)


def post_props(server: ServerView, request: Request) -> bytes:
    """``POST /props``: accepted (and ignored) with ``--props``, else 501."""
    if not server.config.props_endpoint:
        msg = "This server does not support changing global properties. Start it with `--props`"
        return json_response(request, 501, error_body(501, msg))
    return json_response(request, 200, {"success": True})


def _slot_info(server: ServerView, i: int) -> dict[str, Any]:
    busy = server.slots.is_busy(i)
    return {
        "id": i,
        "id_task": server.slots.task_of.get(i, -1),
        "n_ctx": server.config.n_ctx_slot,
        "speculative": False,
        "is_processing": busy,
        "params": generation_settings(server.config),
        "next_token": {
            "has_next_token": busy,
            "has_new_line": False,
            "n_remain": -1,
            "n_decoded": 0,
            "stopping_word": "",
        },
    }


def get_slots(server: ServerView, request: Request) -> bytes:
    """``/slots``: one object per slot; ``?fail_on_no_slot=1`` gives 503 when all are busy."""
    if not server.config.slots_endpoint:
        msg = "This server does not support slots endpoint. Start it with `--slots`"
        return json_response(request, 501, error_body(501, msg))
    slots = [_slot_info(server, i) for i in range(server.slots.size)]
    if request.args.get(b"fail_on_no_slot") and all(s["is_processing"] for s in slots):
        return json_response(request, 503, error_body(503, "no slot available"))
    return json_response(request, 200, slots)


def _metric_rows(server: ServerView) -> list[tuple[str, str, str, float]]:
    st = server.stats
    prompt_tps = st.prompt_tokens / st.prompt_seconds if st.prompt_seconds > 0 else 0.0
    pred_tps = st.predicted_tokens / st.predicted_seconds if st.predicted_seconds > 0 else 0.0
    c, g = "counter", "gauge"
    return [
        ("llamacpp:prompt_tokens_total", c, "Number of prompt tokens processed.",
         st.prompt_tokens),
        ("llamacpp:prompt_seconds_total", c, "Prompt process time", st.prompt_seconds),
        ("llamacpp:tokens_predicted_total", c, "Number of generation tokens processed.",
         st.predicted_tokens),
        ("llamacpp:tokens_predicted_seconds_total", c, "Predict process time",
         st.predicted_seconds),
        ("llamacpp:n_decode_total", c, "Total number of llama_decode() calls",
         st.decode_calls),
        ("llamacpp:prompt_tokens_seconds", g, "Average prompt throughput in tokens/s.",
         prompt_tps),
        ("llamacpp:predicted_tokens_seconds", g, "Average generation throughput in tokens/s.",
         pred_tps),
        ("llamacpp:requests_processing", g, "Number of requests processing.",
         server.slots.busy),
        ("llamacpp:requests_deferred", g, "Number of requests deferred.", server.slots.queued),
        ("fake_llama_requests_total", c, "Generation requests received by the fake.",
         st.requests),
        ("fake_llama_cancelled_total", c, "Generations cancelled by client disconnect.",
         st.cancelled),
        ("fake_llama_completed_total", c, "Generation responses that ended normally.",
         st.completed),
        ("fake_llama_faulted_total", c, "Responses ended by an injected fault.", st.faulted),
    ]  # fmt: skip


def get_metrics(server: ServerView, request: Request) -> bytes:
    """``/metrics``: Prometheus text with ``--metrics``, else 501."""
    if not server.config.metrics:
        msg = "This server does not support metrics endpoint. Start it with `--metrics`"
        return json_response(request, 501, error_body(501, msg))
    lines = []
    for name, kind, help_, value in _metric_rows(server):
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value:g}"]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    request.setHeader(b"Content-Type", b"text/plain; version=0.0.4")
    request.setHeader(b"Process-Start-Time-Unix", str(int(server.started_at)).encode())
    return data
