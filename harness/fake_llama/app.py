"""HTTP API of the fake llama-server (twisted.web) and the per-request generation job.

Shapes follow llama.cpp's tools/server (server.cpp, server-http.cpp,
server-context.cpp, server-task.cpp): error bodies, middleware order (loading 503,
then API key, then routing/404), SSE framing (``data: <json>\\n\\n``, ``:\\n\\n``
pings), chunk fields, ``timings`` and ``usage``.
"""

from __future__ import annotations

import fcntl
import json
import random
import socket
import string
import struct
import termios
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from harness.fake_llama.faults import REQUEST_KEYS, Faults, FaultSpecError, parse_faults
from harness.fake_llama.generate import (
    EMBEDDING_DIM,
    VOCABULARY,
    Generation,
    RequestError,
    embedding_base64,
    embedding_vector,
    plan_generation,
    prompt_text,
    token_id,
    tokenize,
)
from server_core.sse import encode_comment, encode_event

if TYPE_CHECKING:
    from harness.fake_llama.server import FakeServer

__all__ = ["FINGERPRINT", "FakeLlamaResource", "Job", "error_body"]

FINGERPRINT = "b0-fakellama"
JSON_CT = b"application/json; charset=utf-8"
PUBLIC_PATHS = frozenset({"/health", "/v1/health", "/models", "/v1/models", "/"})
GENERATION_PATHS = frozenset(
    {
        "/completion",
        "/completions",
        "/v1/completions",
        "/chat/completions",
        "/v1/chat/completions",
        "/embedding",
        "/embeddings",
        "/v1/embeddings",
    }
)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    500: "server_error",
    501: "not_supported_error",
    503: "unavailable_error",
}
STATUS_MESSAGES = {
    400: "Invalid request",
    401: "Invalid API Key",
    403: "Forbidden",
    404: "File Not Found",
    500: "Internal Server Error",
    501: "Not supported",
    503: "Loading model",
}

_ID_ALPHABET = string.digits + string.ascii_lowercase + string.ascii_uppercase


def dumps(obj: Any) -> str:
    """JSON like nlohmann's ``dump()``: compact, raw UTF-8."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def error_body(status: int, message: str | None = None, type_: str | None = None) -> dict[str, Any]:
    """llama-server's error object for ``status``."""
    if type_ is None:
        type_ = ERROR_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
    if message is None:
        message = STATUS_MESSAGES.get(status, f"HTTP {status}")
    return {"error": {"code": status, "message": message, "type": type_}}


def _json_error_message(raw: bytes, exc: Exception) -> str:
    """A nlohmann-style parse error message (llama-server answers these with 500)."""
    if not raw.strip():
        return (
            "[json.exception.parse_error.101] parse error at line 1, column 1: attempting to "
            "parse an empty input; check that your input string or stream contains the "
            "expected JSON"
        )
    if isinstance(exc, json.JSONDecodeError):
        return (
            f"[json.exception.parse_error.101] parse error at line {exc.lineno}, column "
            f"{exc.colno}: syntax error while parsing value - {exc.msg}"
        )
    return f"[json.exception.parse_error.101] parse error: {exc}"


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(500, _json_error_message(raw, e), "server_error") from None


def _bool(body: Any, key: str, default: bool = False) -> bool:
    value = body.get(key, default) if isinstance(body, Mapping) else default
    return value if isinstance(value, bool) else default


class _Terminated(Exception):
    """The response was ended by an injected fault."""


# --------------------------------------------------------------------------------------
# the resource
# --------------------------------------------------------------------------------------


class FakeLlamaResource(Resource):
    """Every path goes through ``render``: loading gate, API key, routing."""

    isLeaf = True

    def __init__(self, fake: FakeServer) -> None:
        super().__init__()
        self.fake = fake
        get: dict[str, Callable[[Request], Any]] = {
            "/health": self.get_health,
            "/v1/health": self.get_health,
            "/metrics": self.get_metrics,
            "/props": self.get_props,
            "/models": self.get_models,
            "/v1/models": self.get_models,
            "/slots": self.get_slots,
            "/": self.get_index,
        }
        post: dict[str, Callable[[Request], Any]] = {
            "/props": self.post_props,
            "/completion": self.post_completion_native,
            "/completions": self.post_completion_native,
            "/v1/completions": self.post_completion_oai,
            "/chat/completions": self.post_chat,
            "/v1/chat/completions": self.post_chat,
            "/embedding": self.post_embeddings_native,
            "/embeddings": self.post_embeddings_native,
            "/v1/embeddings": self.post_embeddings_oai,
            "/tokenize": self.post_tokenize,
            "/detokenize": self.post_detokenize,
            "/apply-template": self.post_apply_template,
            "/infill": self.post_infill,
            "/rerank": self.post_rerank,
            "/reranking": self.post_rerank,
            "/v1/rerank": self.post_rerank,
            "/v1/reranking": self.post_rerank,
        }
        self.routes: dict[bytes, dict[str, Callable[[Request], Any]]] = {b"GET": get, b"POST": post}

    # -- plumbing --------------------------------------------------------------------

    def render(self, request: Request) -> Any:
        request.setHeader(b"Server", b"llama.cpp")
        origin = request.getHeader(b"origin")
        request.setHeader(b"Access-Control-Allow-Origin", origin or b"")
        path = (request.path or b"/").decode("utf-8", "replace")
        try:
            return self._dispatch(request, path)
        except RequestError as e:
            return self.send_json(request, e.status, e.body())
        except Exception as e:  # never a traceback page: llama-server answers 500 JSON
            self.fake.log(f"srv    operator(): got exception: {e!r}")
            return self.send_json(request, 500, error_body(500, str(e), "server_error"))

    def _dispatch(self, request: Request, path: str) -> Any:
        server = self.fake
        method = request.method or b"GET"
        server.debug(f"srv  log_server_r: request: {method.decode()} {path}")
        if method == b"OPTIONS":
            request.setHeader(b"Access-Control-Allow-Credentials", b"true")
            request.setHeader(b"Access-Control-Allow-Methods", b"GET, POST")
            request.setHeader(b"Access-Control-Allow-Headers", b"*")
            request.setHeader(b"Content-Type", b"text/html")
            return b""
        if path == "/_fault":
            return self.fault_control(request)
        # llama-server's middleware order: loading state, then the API key.
        if server.state != "ready":
            return self.send_json(request, 503, error_body(503, "Loading model"))
        if server.config.api_keys and path not in PUBLIC_PATHS and not self._key_ok(request):
            server.log("srv  operator(): unauthorized: Invalid API Key")
            return self.send_json(request, 401, error_body(401, "Invalid API Key"))
        # cpp-httplib answers HEAD with the GET handler (Twisted drops the body).
        handler = self.routes.get(b"GET" if method == b"HEAD" else method, {}).get(path)
        if handler is None:
            return self.send_json(request, 404, error_body(404, "File Not Found"))
        if path in GENERATION_PATHS:
            server.stats.requests += 1
        return handler(request)

    def _key_ok(self, request: Request) -> bool:
        value = request.getHeader(b"authorization") or request.getHeader(b"x-api-key") or b""
        key = value.decode("utf-8", "replace")
        if key.startswith("Bearer "):
            key = key[len("Bearer ") :]
        return key in self.fake.config.api_keys

    def send_json(self, request: Request, status: int, obj: Any) -> bytes:
        data = dumps(obj).encode("utf-8")
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", JSON_CT)
        request.setHeader(b"Content-Length", str(len(data)).encode())
        return data

    def _body(self, request: Request) -> Any:
        raw = request.content.read() if request.content is not None else b""
        return _parse_json(raw)

    # -- fault control ---------------------------------------------------------------

    def fault_control(self, request: Request) -> bytes:
        """``GET`` shows, ``POST`` replaces (SPEC text or ``{"spec": ...}``), ``DELETE`` clears."""
        server = self.fake
        if request.method == b"POST":
            raw = request.content.read() if request.content is not None else b""
            text = raw.decode("utf-8", "replace").strip()
            if text.startswith("{"):
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    return self.send_json(request, 400, error_body(400, f"invalid JSON: {e}"))
                spec = obj.get("spec", "") if isinstance(obj, dict) else None
                if not isinstance(spec, str):
                    return self.send_json(request, 400, error_body(400, "'spec' must be a string"))
                text = spec
            try:
                server.set_live_faults(text)
            except FaultSpecError as e:
                return self.send_json(request, 400, error_body(400, str(e)))
            server.log(f"srv  fault: live request faults set to {text!r}")
        elif request.method == b"DELETE":
            server.clear_live_faults()
            server.log("srv  fault: live request faults cleared")
        elif request.method != b"GET":
            return self.send_json(request, 404, error_body(404, "File Not Found"))
        return self.send_json(request, 200, server.fault_state())

    def request_faults(self, request: Request, rng: random.Random) -> Faults:
        """The faults for one request: X-Fault header > live set > --fault defaults,
        then kept with probability ``p`` (one draw from the request's RNG)."""
        server = self.fake
        header = request.getHeader(b"x-fault")
        if header is not None:
            try:
                faults = parse_faults(header.decode("utf-8", "replace"), allowed=REQUEST_KEYS)
            except FaultSpecError as e:
                msg = f"invalid X-Fault header: {e}"
                raise RequestError(400, msg, "invalid_request_error") from None
        elif server.live_faults is not None:
            faults = server.live_faults
        else:
            faults = server.request_defaults
        draw = rng.random()
        if faults.empty or draw >= faults.p:
            return Faults()
        if faults.keys - {"p"}:
            server.debug(f"srv  fault: request gets faults {faults.to_spec()!r}")
        return faults

    def new_request_rng(self) -> random.Random:
        server = self.fake
        server.request_counter += 1
        return random.Random(f"{server.config.seed}:{server.request_counter}")

    # -- simple GET routes -----------------------------------------------------------

    def get_health(self, request: Request) -> bytes:
        return self.send_json(request, 200, {"status": "ok"})

    def get_index(self, request: Request) -> bytes:
        if not self.fake.config.webui:
            return self.send_json(request, 404, error_body(404, "File Not Found"))
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return b"<!doctype html><title>fake llama-server</title><p>fake llama-server</p>\n"

    def model_info(self) -> dict[str, Any]:
        cfg = self.fake.config
        return {
            "id": cfg.model_alias,
            "aliases": cfg.aliases,
            "tags": [],
            "object": "model",
            "created": int(self.fake.reactor.seconds()),
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

    def get_models(self, request: Request) -> bytes:
        name = self.fake.config.model_alias
        models = {
            "models": [
                {
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
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": "",
                        "families": [""],
                        "parameter_size": "",
                        "quantization_level": "",
                    },
                }
            ],
            "object": "list",
            "data": [self.model_info()],
        }
        return self.send_json(request, 200, models)

    def default_params(self) -> dict[str, Any]:
        cfg = self.fake.config
        return {
            "seed": cfg.seed,
            "temperature": 0.8,
            "top_k": 40,
            "top_p": 0.95,
            "min_p": 0.05,
            "max_tokens": cfg.n_predict,
            "n_predict": cfg.n_predict,
            "n_keep": 0,
            "ignore_eos": False,
            "stream": False,
            "n_probs": 0,
            "samplers": ["top_k", "top_p", "min_p", "temperature"],
        }

    def get_props(self, request: Request) -> bytes:
        cfg = self.fake.config
        props = {
            "default_generation_settings": {
                "params": self.default_params(),
                "n_ctx": cfg.n_ctx_slot,
            },
            "total_slots": self.fake.slots.size,
            "model_alias": cfg.model_alias,
            "model_path": cfg.model_path or "",
            "modalities": {"vision": False, "audio": False},
            "endpoint_slots": cfg.slots_endpoint,
            "endpoint_props": cfg.props_endpoint,
            "endpoint_metrics": cfg.metrics,
            "webui": cfg.webui,
            "chat_template": self.fake.chat_template.source,
            "bos_token": "<s>",
            "eos_token": "</s>",
            "build_info": FINGERPRINT,
            "is_sleeping": False,
        }
        return self.send_json(request, 200, props)

    def post_props(self, request: Request) -> bytes:
        if not self.fake.config.props_endpoint:
            msg = "This server does not support changing global properties. Start it with `--props`"
            return self.send_json(request, 501, error_body(501, msg))
        return self.send_json(request, 200, {"success": True})

    def get_slots(self, request: Request) -> bytes:
        server = self.fake
        if not server.config.slots_endpoint:
            msg = "This server does not support slots endpoint. Start it with `--slots`"
            return self.send_json(request, 501, error_body(501, msg))
        slots = []
        for i in range(server.slots.size):
            busy = server.slots.is_busy(i)
            slots.append(
                {
                    "id": i,
                    "id_task": server.slots.task_of.get(i, -1),
                    "n_ctx": server.config.n_ctx_slot,
                    "speculative": False,
                    "is_processing": busy,
                    "params": self.default_params(),
                    "next_token": {
                        "has_next_token": busy,
                        "has_new_line": False,
                        "n_remain": -1,
                        "n_decoded": 0,
                        "stopping_word": "",
                    },
                }
            )
        if request.args.get(b"fail_on_no_slot") and all(s["is_processing"] for s in slots):
            return self.send_json(request, 503, error_body(503, "no slot available"))
        return self.send_json(request, 200, slots)

    def get_metrics(self, request: Request) -> bytes:
        server = self.fake
        if not server.config.metrics:
            msg = "This server does not support metrics endpoint. Start it with `--metrics`"
            return self.send_json(request, 501, error_body(501, msg))
        st = server.stats
        prompt_tps = st.prompt_tokens / st.prompt_seconds if st.prompt_seconds > 0 else 0.0
        pred_tps = st.predicted_tokens / st.predicted_seconds if st.predicted_seconds > 0 else 0.0
        c, g = "counter", "gauge"
        rows: list[tuple[str, str, str, float]] = [
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
        lines = []
        for name, kind, help_, value in rows:
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value:g}"]
        data = ("\n".join(lines) + "\n").encode("utf-8")
        request.setHeader(b"Content-Type", b"text/plain; version=0.0.4")
        request.setHeader(b"Process-Start-Time-Unix", str(int(server.started_at)).encode())
        return data

    # -- tokenizer routes ------------------------------------------------------------

    def post_tokenize(self, request: Request) -> bytes:
        body = self._body(request)
        tokens: list[Any] = []
        if isinstance(body, dict) and "content" in body:
            content = body["content"]
            text = content if isinstance(content, str) else " ".join(map(str, content))
            with_pieces = _bool(body, "with_pieces")
            for word in tokenize(text):
                tid = token_id(word)
                self.fake.vocab_extra.setdefault(tid, word)
                tokens.append({"id": tid, "piece": word} if with_pieces else tid)
        return self.send_json(request, 200, {"tokens": tokens})

    def post_detokenize(self, request: Request) -> bytes:
        body = self._body(request)
        words: list[str] = []
        if isinstance(body, dict) and isinstance(body.get("tokens"), list):
            for tid in body["tokens"]:
                if not isinstance(tid, int) or isinstance(tid, bool):
                    raise RequestError(
                        500, "[json.exception.type_error.302] type must be number", "server_error"
                    )
                if 10 <= tid < 10 + len(VOCABULARY):
                    words.append(VOCABULARY[tid - 10])
                else:
                    words.append(self.fake.vocab_extra.get(tid, ""))
        return self.send_json(request, 200, {"content": " ".join(w for w in words if w)})

    def post_apply_template(self, request: Request) -> bytes:
        body = self._body(request)
        _validate_chat(body)
        prompt = self.fake.chat_template.render(body["messages"])
        return self.send_json(request, 200, {"prompt": prompt})

    def post_infill(self, request: Request) -> bytes:
        msg = (
            "Infill is not supported by this model: prefix token is missing. "
            "suffix token is missing. middle token is missing. "
        )
        return self.send_json(request, 501, error_body(501, msg))

    def post_rerank(self, request: Request) -> bytes:
        msg = "This server does not support reranking. Start it with `--reranking`"
        return self.send_json(request, 501, error_body(501, msg))

    # -- generation routes -----------------------------------------------------------

    def _no_completions(self, request: Request) -> bytes | None:
        if self.fake.config.embeddings:
            msg = "This server does not support completions. Start it without `--embeddings`"
            return self.send_json(request, 501, error_body(501, msg))
        return None

    def post_chat(self, request: Request) -> Any:
        refused = self._no_completions(request)
        if refused is not None:
            return refused
        body = self._body(request)
        _validate_chat(body)
        return self._generate(request, "chat", body)

    def post_completion_oai(self, request: Request) -> Any:
        refused = self._no_completions(request)
        if refused is not None:
            return refused
        body = self._body(request)
        if not isinstance(body, dict) or "prompt" not in body:
            raise RequestError(400, '"prompt" is required', "invalid_request_error")
        _check_n(body)
        return self._generate(request, "cmpl", body)

    def post_completion_native(self, request: Request) -> Any:
        refused = self._no_completions(request)
        if refused is not None:
            return refused
        body = self._body(request)
        if not isinstance(body, dict) or "prompt" not in body:
            msg = "[json.exception.out_of_range.403] key 'prompt' not found"
            raise RequestError(400, msg, "invalid_request_error")
        return self._generate(request, "native", body)

    def _generate(self, request: Request, kind: str, body: dict[str, Any]) -> Any:
        _check_field_types(body)
        server = self.fake
        rng = self.new_request_rng()
        faults = self.request_faults(request, rng)
        # A chat request is counted by its rendered template; its text never depends on it.
        prompt = server.chat_template.render(body["messages"]) if kind == "chat" else None
        gen = plan_generation(
            body,
            server.config.seed,
            n_ctx=server.config.n_ctx_slot,
            n_predict_default=server.config.n_predict,
            prompt=prompt,
        )
        job = Job(self, request, kind, body, gen, faults, rng)
        job.start()
        return NOT_DONE_YET

    def post_embeddings_oai(self, request: Request) -> Any:
        return self._embeddings(request, oai=True)

    def post_embeddings_native(self, request: Request) -> Any:
        return self._embeddings(request, oai=False)

    def _embeddings(self, request: Request, *, oai: bool) -> Any:
        server = self.fake
        if not server.config.embeddings:
            msg = "This server does not support embeddings. Start it with `--embeddings`"
            return self.send_json(request, 501, error_body(501, msg))
        body = self._body(request)
        if isinstance(body, dict) and "input" in body:
            prompt = body["input"]
        elif isinstance(body, dict) and "content" in body:
            oai = False  # "content" is not OAI compatible
            prompt = body["content"]
        else:
            raise RequestError(
                400, '"input" or "content" must be provided', "invalid_request_error"
            )
        use_base64 = False
        if "encoding_format" in body:
            fmt = body["encoding_format"]
            if fmt == "base64":
                use_base64 = True
            elif fmt != "float":
                msg = "The format to return the embeddings in. Can be either float or base64"
                raise RequestError(400, msg, "invalid_request_error")
        inputs = (
            prompt
            if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt)
            else [prompt]
        )
        texts = [
            p if isinstance(p, str) else " ".join(map(str, p)) if isinstance(p, list) else str(p)
            for p in inputs
        ]
        if any(not tokenize(t) for t in texts):
            raise RequestError(400, "Input content cannot be empty", "invalid_request_error")
        rng = self.new_request_rng()
        faults = self.request_faults(request, rng)
        job = EmbeddingJob(self, request, texts, oai=oai, use_base64=use_base64, faults=faults)
        job.start()
        return NOT_DONE_YET


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


# Sampling fields llama-server reads with a typed getter: a wrong JSON type is a 400
# with nlohmann's message (checked against a real build of llama-cpp-python 0.3.36).
_NUMBER_FIELDS = (
    "n_predict", "max_tokens", "max_completion_tokens", "temperature", "top_k", "top_p",
    "min_p", "typical_p", "seed", "presence_penalty", "frequency_penalty", "repeat_penalty",
    "repeat_last_n", "n_probs", "n_keep", "mirostat", "mirostat_tau", "mirostat_eta",
)  # fmt: skip
_BOOL_FIELDS = ("stream", "ignore_eos", "cache_prompt")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _check_field_types(body: Mapping[str, Any]) -> None:
    for names, wanted in ((_NUMBER_FIELDS, "number"), (_BOOL_FIELDS, "boolean")):
        for name in names:
            if name in body and body[name] is not None and _json_type(body[name]) != wanted:
                msg = (
                    f"Field '{name}': [json.exception.type_error.302] type must be {wanted}, "
                    f"but is {_json_type(body[name])}"
                )
                raise RequestError(400, msg, "invalid_request_error")


def _check_n(body: Mapping[str, Any]) -> None:
    n = body.get("n", 1)
    if isinstance(n, int) and not isinstance(n, bool) and n != 1:
        raise RequestError(400, "Only one completion choice is allowed", "invalid_request_error")


def _validate_chat(body: Any) -> None:
    """The checks of llama-server's ``oaicompat_chat_params_parse`` (same messages)."""
    if not isinstance(body, dict) or "messages" not in body:
        raise RequestError(400, "'messages' is required", "invalid_request_error")
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        rtype = fmt.get("type") if isinstance(fmt.get("type"), str) else ""
        if rtype and rtype not in ("text", "json_object", "json_schema"):
            msg = f'response_format type must be one of "text" or "json_object", but got: {rtype}'
            raise RequestError(400, msg, "invalid_request_error")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise RequestError(400, "Expected 'messages' to be an array", "invalid_request_error")
    for msg in messages:
        m = msg if isinstance(msg, dict) else {}
        role = m.get("role") if isinstance(m.get("role"), str) else ""
        if role != "assistant" and "content" not in m:
            raise RequestError(
                400, "All non-assistant messages must contain 'content'", "invalid_request_error"
            )
        if role == "assistant":
            if "content" not in m and "tool_calls" not in m:
                msg_ = "Assistant message must contain either 'content' or 'tool_calls'!"
                raise RequestError(400, msg_, "invalid_request_error")
            if "content" not in m:
                continue
        content = m["content"]
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise RequestError(
                400, "Expected 'content' to be a string or an array", "invalid_request_error"
            )
        for part in content:
            ptype = part.get("type") if isinstance(part, dict) else None
            if ptype == "text":
                continue
            if ptype in ("image_url", "input_audio"):
                msg_ = (
                    "image input is not supported - hint: if this is unexpected, you may need "
                    "to provide the mmproj"
                )
                raise RequestError(400, msg_, "invalid_request_error")
            raise RequestError(400, "unsupported content[].type", "invalid_request_error")
    _check_n(body)


# --------------------------------------------------------------------------------------
# transport helpers
# --------------------------------------------------------------------------------------


def _transport_pending(transport: Any) -> int:
    """Bytes Twisted still holds for this transport (not yet handed to the kernel)."""
    buf = getattr(transport, "dataBuffer", b"")
    return (
        int(getattr(transport, "_tempDataLen", 0)) + len(buf) - int(getattr(transport, "offset", 0))
    )


def _kernel_unsent(transport: Any) -> int:
    """Bytes in the kernel send queue (Linux SIOCOUTQ); 0 if unknown."""
    try:
        fd = transport.getHandle().fileno()
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0])
    except Exception:
        return 0


def _split_point(frame: bytes) -> int:
    """Inside the first multi-byte UTF-8 character, else the middle."""
    for i, b in enumerate(frame):
        if b >= 0xC0:
            return i + 1
    return max(1, len(frame) // 2)


# --------------------------------------------------------------------------------------
# jobs
# --------------------------------------------------------------------------------------


class _BaseJob:
    """Common life of an asynchronous response: start, client loss, abort, cleanup."""

    def __init__(self, resource: FakeLlamaResource, request: Request, faults: Faults) -> None:
        self.resource = resource
        self.fake = resource.fake
        self.reactor = resource.fake.reactor
        self.request = request
        self.faults = faults
        self.d: Deferred[None] | None = None
        self.done = False
        self.fake_closed = False  # the fake (fault / stop) ended the connection
        self.slot: int | None = None
        self.task_id = -1
        # Kept here: Request forgets its channel once finished, and close_after needs
        # the TCP transport after finishing the HTTP response.
        self._transport: Any = request.channel.transport if request.channel else None

    def start(self) -> None:
        self.fake.jobs.add(self)
        self.request.notifyFinish().addErrback(self._client_gone)
        self.d = Deferred.fromCoroutine(self._main())

    async def _main(self) -> None:
        try:
            await self.run()
        except (CancelledError, _Terminated):
            pass
        except Exception as e:  # a bug in the fake must not leave the client hanging
            self.fake.log(f"srv  fake: job failed: {e!r}")
            if self._alive() and not self.request.startedWriting:
                self.send_error_now(500, error_body(500, str(e), "server_error"))
            elif self._alive():
                self._close(abort=True)
        finally:
            self._cleanup()

    async def run(self) -> None:
        raise NotImplementedError

    def _client_gone(self, failure: Failure) -> None:
        if self.done or self.fake_closed:
            return
        if not self.fake.stopping:
            self.fake.stats.cancelled += 1
            slot = self.slot if self.slot is not None else -1
            self.fake.log(
                f"srv  cancel_tasks: id {slot:2d} | task {self.task_id} | stop: cancel task"
            )
        if self.d is not None:
            self.d.cancel()

    def abort(self) -> None:
        """The server is stopping or crashing: end without counting a cancel."""
        self.fake_closed = True
        if self.d is not None:
            self.d.cancel()

    def _cleanup(self) -> None:
        self.done = True
        if self.slot is not None:
            self.fake.slots.release(self.slot)
            self.slot = None
        self.fake.jobs.discard(self)

    def _alive(self) -> bool:
        return not self.request._disconnected and not self.request.finished

    async def sleep(self, seconds: float) -> None:
        await deferLater(self.reactor, max(0.0, seconds))

    async def forever(self) -> None:
        await Deferred()

    @property
    def transport(self) -> Any:
        return self._transport

    async def flush(self, *, kernel: bool = False, timeout: float = 1.0) -> None:
        """Wait until written bytes left Twisted's buffer (and the kernel's, if asked)."""
        deadline = self.reactor.seconds() + timeout
        while self._alive() and self.reactor.seconds() < deadline:
            t = self.transport
            if t is None:
                return
            if _transport_pending(t) <= 0 and (not kernel or _kernel_unsent(t) <= 0):
                return
            await self.sleep(0.001)

    def _close(self, *, abort: bool) -> None:
        self.fake_closed = True
        t = self.transport
        if t is None:
            return
        if abort:
            try:
                t.getHandle().setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            except Exception:  # noqa: S110 - RST is best effort on exotic transports
                pass
            t.abortConnection()
        else:
            t.loseConnection()

    def send_error_now(self, status: int, obj: Any) -> None:
        data = dumps(obj).encode("utf-8")
        req = self.request
        req.setResponseCode(status)
        req.setHeader(b"Content-Type", JSON_CT)
        req.setHeader(b"Content-Length", str(len(data)).encode())
        req.write(data)
        req.finish()

    async def before_headers(self) -> None:
        """``status`` / ``hang`` / queue-independent faults that act before any byte."""
        f = self.faults
        if f.status is not None:
            self.fake.stats.faulted += 1
            self.send_error_now(f.status, error_body(f.status))
            raise _Terminated
        if f.hang:
            self.fake.debug("srv  fault: hang")
            await self.forever()


class Job(_BaseJob):
    """One completion request (chat / OpenAI text / native), stream or not."""

    def __init__(
        self,
        resource: FakeLlamaResource,
        request: Request,
        kind: str,
        body: dict[str, Any],
        gen: Generation,
        faults: Faults,
        rng: random.Random,
    ) -> None:
        super().__init__(resource, request, faults)
        self.kind = kind
        self.body = body
        self.gen = gen
        self.rng = rng
        self.stream = body.get("stream") is True
        opts = body.get("stream_options")
        self.include_usage = (
            kind == "chat" and isinstance(opts, dict) and opts.get("include_usage") is True
        )
        self.cmpl_id = "chatcmpl-" + "".join(rng.choice(_ID_ALPHABET) for _ in range(24))
        self.created = int(self.reactor.seconds())
        self.alias = self.fake.config.model_alias
        self.line_end = "\r\n" if faults.crlf else "\n"
        self.events = 0
        self.n_sent_tokens = 0
        self._writing = False
        self._ping_call: IDelayedCall | None = None
        self.t_start = 0.0
        self.t_first = 0.0

    # -- timing ----------------------------------------------------------------------

    def token_gap(self) -> float:
        f = self.faults
        gap = f.token_delay
        if f.jitter:
            gap += self.rng.uniform(-f.jitter, f.jitter)
        return max(0.0, gap)

    def timings(self) -> dict[str, Any]:
        now = self.reactor.seconds()
        prompt_ms = max(0.0, (self.t_first or now) - self.t_start) * 1000.0
        pred_ms = max(0.0, now - (self.t_first or now)) * 1000.0
        n_p, n_g = self.gen.n_prompt, self.n_sent_tokens
        return {
            "cache_n": 0,
            "prompt_n": n_p,
            "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / n_p if n_p else 0.0,
            "prompt_per_second": n_p / prompt_ms * 1000.0 if prompt_ms > 0 else 0.0,
            "predicted_n": n_g,
            "predicted_ms": pred_ms,
            "predicted_per_token_ms": pred_ms / n_g if n_g else 0.0,
            "predicted_per_second": n_g / pred_ms * 1000.0 if pred_ms > 0 else 0.0,
        }

    def usage(self) -> dict[str, Any]:
        n_p, n_g = self.gen.n_prompt, self.n_sent_tokens
        return {
            "completion_tokens": n_g,
            "prompt_tokens": n_p,
            "total_tokens": n_p + n_g,
            "prompt_tokens_details": {"cached_tokens": 0},
        }

    def _account(self) -> None:
        st = self.fake.stats
        st.prompt_tokens += self.gen.n_prompt
        st.predicted_tokens += self.n_sent_tokens
        st.decode_calls += self.n_sent_tokens + 1
        now = self.reactor.seconds()
        if self.t_first:
            st.prompt_seconds += self.t_first - self.t_start
            st.predicted_seconds += now - self.t_first

    # -- payloads --------------------------------------------------------------------

    def _chunk_base(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "id": self.cmpl_id,
            "model": self.alias,
            "system_fingerprint": FINGERPRINT,
            "object": "chat.completion.chunk",
        }

    def chat_delta(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "choices": [{"finish_reason": finish, "index": 0, "delta": delta}],
            **self._chunk_base(),
        }

    def cmpl_chunk(self, text: str, finish: str | None = None) -> dict[str, Any]:
        return {
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            "created": self.created,
            "model": self.alias,
            "system_fingerprint": FINGERPRINT,
            "object": "text_completion",
            "id": self.cmpl_id,
        }

    def native_partial(self, token: str) -> dict[str, Any]:
        return {
            "index": 0,
            "content": token,
            "tokens": [],
            "stop": False,
            "id_slot": self.slot if self.slot is not None else -1,
            "tokens_predicted": self.n_sent_tokens,
            "tokens_evaluated": self.gen.n_prompt,
        }

    def native_final(self, content: str) -> dict[str, Any]:
        settings = self.resource.default_params()
        settings["stream"] = self.stream
        return {
            "index": 0,
            "content": content,
            "tokens": [],
            "id_slot": self.slot if self.slot is not None else -1,
            "stop": True,
            "model": self.alias,
            "tokens_predicted": self.n_sent_tokens,
            "tokens_evaluated": self.gen.n_prompt,
            "generation_settings": settings,
            "prompt": prompt_text(self.body),
            "has_new_line": False,
            "truncated": False,
            "stop_type": self.gen.stop_type,
            "stopping_word": self.gen.stopping_word,
            "tokens_cached": self.gen.n_prompt + self.n_sent_tokens,
            "timings": self.timings(),
        }

    def final_payloads(self) -> list[dict[str, Any]]:
        """The events after the last token (not counting [DONE])."""
        finish = self.gen.finish_reason
        if self.kind == "chat":
            out = [self.chat_delta({}, finish)]
            if self.include_usage:
                out.append({"choices": [], **self._chunk_base(), "usage": self.usage()})
            out[-1]["timings"] = self.timings()
            return out
        if self.kind == "cmpl":
            chunk = self.cmpl_chunk("", finish)
            chunk["usage"] = self.usage()
            chunk["timings"] = self.timings()
            return [chunk]
        return [self.native_final("")]

    def full_response(self) -> dict[str, Any]:
        text = "".join(self.gen.tokens[: self.n_sent_tokens])
        finish = self.gen.finish_reason
        if self.kind == "chat":
            return {
                "choices": [
                    {
                        "finish_reason": finish,
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                    }
                ],
                "created": self.created,
                "model": self.alias,
                "system_fingerprint": FINGERPRINT,
                "object": "chat.completion",
                "usage": self.usage(),
                "id": self.cmpl_id,
                "timings": self.timings(),
            }
        if self.kind == "cmpl":
            body = self.cmpl_chunk(text, finish)
            body["usage"] = self.usage()
            body["timings"] = self.timings()
            return body
        return self.native_final(text)

    # -- the run ---------------------------------------------------------------------

    async def run(self) -> None:
        await self.before_headers()
        self.slot = await self.fake.slots.acquire()
        self.fake.task_counter += 1
        self.task_id = self.fake.task_counter
        self.fake.slots.task_of[self.slot] = self.task_id
        self.t_start = self.reactor.seconds()
        self.fake.debug(
            f"slot launch_slot_: id {self.slot:2d} | task {self.task_id} | processing task"
        )
        if self.stream:
            await self.run_stream()
        else:
            await self.run_plain()
        self._account()

    async def run_plain(self) -> None:
        f = self.faults
        tokens = self.gen.tokens
        await self.sleep(f.ttft)
        self.t_first = self.reactor.seconds()
        cut = [
            n
            for n in (
                f.stall_after,
                f.close_after,
                f.drop_after,
                f.reset_after,
                f.crash_after,
                f.error_after,
                f.legacy_error_after,
            )
            if n is not None
        ]
        stop_at = min([len(tokens), *cut])
        for i in range(stop_at):
            if i:
                await self.sleep(self.token_gap())
            self.n_sent_tokens = i + 1
        if cut and min(cut) <= len(tokens):
            await self.plain_fault()
        self.n_sent_tokens = len(tokens)
        data = dumps(self.full_response()).encode("utf-8")
        if f.malformed_after is not None:
            data = data[: max(1, len(data) // 2)]
        req = self.request
        req.setResponseCode(200)
        req.setHeader(b"Content-Type", JSON_CT)
        req.setHeader(b"Content-Length", str(len(data)).encode())
        if f.split_utf8:
            at = _split_point(data)
            req.write(data[:at])
            await self.flush()
            req.write(data[at:])
        else:
            req.write(data)
        req.finish()
        self.fake.stats.completed += 1

    async def plain_fault(self) -> None:
        """A terminal fault hit a non-stream response: no body, or an error status."""
        f = self.faults
        self.fake.stats.faulted += 1
        if f.error_after is not None or f.legacy_error_after is not None:
            self.send_error_now(500, error_body(500, "fault injected by fake-llama-server"))
            raise _Terminated
        if f.stall_after is not None:
            await self.forever()
        if f.crash_after is not None:
            self.fake.crash()
            raise _Terminated
        self._close(abort=f.reset_after is not None)
        raise _Terminated

    # stream ------------------------------------------------------------------------

    def _encode(self, payload: dict[str, Any] | str) -> bytes:
        data = payload if isinstance(payload, str) else dumps(payload)
        return encode_event(data, line_end=self.line_end)

    def ping_interval(self) -> float:
        if self.faults.ping is not None:
            return self.faults.ping
        return self.fake.config.sse_ping_interval

    def _arm_ping(self) -> None:
        if self._ping_call is not None and self._ping_call.active():
            self._ping_call.cancel()
        self._ping_call = None
        interval = self.ping_interval()
        if interval > 0 and self._alive() and not self.done:
            self._ping_call = self.reactor.callLater(interval, self._ping)

    def _ping(self) -> None:
        self._ping_call = None
        if self.done or not self._alive():
            return
        if not self._writing:
            self.request.write(encode_comment("", line_end=self.line_end))
        self._arm_ping()

    def _cleanup(self) -> None:
        if self._ping_call is not None and self._ping_call.active():
            self._ping_call.cancel()
        self._ping_call = None
        super()._cleanup()

    async def _write_frame(self, frame: bytes) -> None:
        if not self._alive():
            raise CancelledError()
        if self.faults.split_utf8:
            self._writing = True
            try:
                at = _split_point(frame)
                self.request.write(frame[:at])
                await self.flush()
                if not self._alive():
                    raise CancelledError()
                self.request.write(frame[at:])
            finally:
                self._writing = False
        else:
            self.request.write(frame)
        self._arm_ping()

    async def emit(self, payload: dict[str, Any] | str) -> None:
        """Write the next data event, then apply the faults keyed on its number."""
        frame = self._encode(payload)
        await self._write_frame(frame)
        self.events += 1
        n = self.events
        f = self.faults
        if f.duplicate_after == n:
            await self._write_frame(frame)
        if f.malformed_after == n:
            await self._write_frame(encode_event("{not json", line_end=self.line_end))
        await self.terminal_faults(n)

    async def terminal_faults(self, n: int) -> None:
        f = self.faults
        le = self.line_end
        if n not in (
            f.error_after,
            f.legacy_error_after,
            f.stall_after,
            f.close_after,
            f.drop_after,
            f.reset_after,
            f.crash_after,
        ):
            return
        self.fake.stats.faulted += 1
        self._account()
        if f.error_after == n:
            err = error_body(500, f"fault injected by fake-llama-server (error_after={n})")
            await self._write_frame(self._encode(err))
            self.request.finish()
            raise _Terminated
        if f.legacy_error_after == n:
            err = error_body(500, f"fault injected by fake-llama-server (legacy_error_after={n})")
            await self._write_frame(f"error: {dumps(err)}{le}{le}".encode())
            await self._write_frame(self._encode("[DONE]"))
            self.request.finish()
            raise _Terminated
        if f.stall_after == n:
            self.fake.debug(f"srv  fault: stall after {n} events")
            await self.forever()
        if f.close_after == n:
            self.fake_closed = True
            self.request.finish()
            self._close(abort=False)
            raise _Terminated
        if f.drop_after == n:
            await self.flush()
            self._close(abort=False)
            raise _Terminated
        if f.reset_after == n:
            await self.flush(kernel=True)
            self._close(abort=True)
            raise _Terminated
        if f.crash_after == n:
            await self.flush(kernel=True)
            self.fake.crash()
            raise _Terminated

    async def run_stream(self) -> None:
        req = self.request
        f = self.faults
        req.setResponseCode(200)
        req.setHeader(b"Content-Type", b"text/event-stream")
        req.setHeader(b"X-Accel-Buffering", b"no")
        req.write(b"")  # headers go out as soon as the task starts (llama-server's is_begin)
        self._arm_ping()
        await self.terminal_faults(0)
        await self.sleep(f.ttft)
        self.t_first = self.reactor.seconds()
        for i, token in enumerate(self.gen.tokens):
            if i == 0:
                if self.kind == "chat":
                    await self.emit(self.chat_delta({"role": "assistant", "content": None}))
            else:
                await self.sleep(self.token_gap())
            self.n_sent_tokens = i + 1
            if self.kind == "chat":
                await self.emit(self.chat_delta({"content": token}))
            elif self.kind == "cmpl":
                await self.emit(self.cmpl_chunk(token))
            else:
                await self.emit(self.native_partial(token))
        for payload in self.final_payloads():
            await self.emit(payload)
        if self.kind != "native":
            await self.emit("[DONE]")
        req.finish()
        self.fake.stats.completed += 1
        self.fake.debug(
            f"slot      release: id {self.slot:2d} | task {self.task_id} | stop processing: "
            f"n_tokens = {self.gen.n_prompt + self.n_sent_tokens}"
        )


class EmbeddingJob(_BaseJob):
    """An embeddings request: ``status``/``hang``/``ttft`` faults apply, then one JSON body."""

    def __init__(
        self,
        resource: FakeLlamaResource,
        request: Request,
        texts: list[str],
        *,
        oai: bool,
        use_base64: bool,
        faults: Faults,
    ) -> None:
        super().__init__(resource, request, faults)
        self.texts = texts
        self.oai = oai
        self.use_base64 = use_base64

    async def run(self) -> None:
        await self.before_headers()
        await self.sleep(self.faults.ttft)
        seed = self.fake.config.seed
        vectors = [embedding_vector(t, seed) for t in self.texts]
        n_tokens = sum(len(tokenize(t)) for t in self.texts)
        self.fake.stats.prompt_tokens += n_tokens
        if self.oai:
            data = [
                {
                    "embedding": embedding_base64(v) if self.use_base64 else v,
                    "index": i,
                    "object": "embedding",
                }
                for i, v in enumerate(vectors)
            ]
            obj: Any = {
                "model": self.fake.config.model_alias,
                "object": "list",
                "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
                "data": data,
            }
        else:
            obj = [{"index": i, "embedding": [v]} for i, v in enumerate(vectors)]
        payload = dumps(obj).encode("utf-8")
        req = self.request
        req.setResponseCode(200)
        req.setHeader(b"Content-Type", JSON_CT)
        req.setHeader(b"Content-Length", str(len(payload)).encode())
        req.write(payload)
        req.finish()
        self.fake.stats.completed += 1
