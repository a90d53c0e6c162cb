"""Deterministic "model": tokenizer, text generation and embeddings.

Everything here is pure: the same inputs give the same outputs in every process
(hashing uses SHA-256, never Python's salted ``hash``).

Tokenizer: a prompt's tokens are its whitespace-separated words. A chat request is
first rendered as one line ``role: content`` per message (the fake's "chat
template"), so ``{"role": "user", "content": "hi there"}`` is 3 tokens;
``templates.py`` renders the other templates ``--chat-template`` selects.

Generation: the text is a sequence of words from ``VOCABULARY``, each token being
one word with a leading space (``" river"``). The words and the natural length
(4..24 tokens, where the model "emits EOS") derive from a hash of the server seed,
the prompt, the request ``seed`` and ``temperature``. ``max_tokens`` (and the
context size) only cut that sequence, so a shorter limit gives a prefix.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_N_CTX",
    "EMBEDDING_DIM",
    "VOCABULARY",
    "Generation",
    "RequestError",
    "chat_prompt",
    "content_text",
    "embedding_vector",
    "expected_text",
    "n_predict_of",
    "plan_generation",
    "prompt_text",
    "token_id",
    "tokenize",
]

DEFAULT_N_CTX = 4096
EMBEDDING_DIM = 256
MIN_NATURAL = 4
MAX_NATURAL = 24
DEFAULT_TEMPERATURE = 0.8

# Readable lowercase words; about one in eight carries multi-byte UTF-8 (2, 3 and
# 4 byte sequences) so clients' decoders are exercised by ordinary streams.
VOCABULARY: tuple[str, ...] = (
    "alpha", "amber", "anchor", "apple", "arrow", "autumn", "badge", "basket",
    "beacon", "berry", "birch", "blossom", "breeze", "bridge", "bright", "brook",
    "candle", "canyon", "cedar", "chalk", "cherry", "cliff", "cloud", "clover",
    "comet", "copper", "coral", "cotton", "crystal", "daisy", "dawn", "delta",
    "desert", "drift", "eagle", "ember", "falcon", "feather", "fern", "field",
    "flame", "forest", "fossil", "frost", "garden", "glacier", "granite", "harbor",
    "hazel", "honey", "horizon", "island", "ivory", "jasmine", "juniper", "kettle",
    "lagoon", "lantern", "lemon", "linen", "lotus", "maple", "marble", "meadow",
    "meteor", "mint", "moss", "mountain", "nectar", "nutmeg", "oak", "ocean",
    "olive", "orchid", "otter", "pebble", "pepper", "pine", "planet", "plum",
    "pollen", "prairie", "quartz", "quill", "rain", "raven", "reef", "river",
    "robin", "saffron", "sage", "sand", "shadow", "silver", "sparrow", "spruce",
    "stone", "summer", "sunset", "thistle", "thunder", "tide", "timber", "topaz",
    "tulip", "valley", "velvet", "violet", "walnut", "willow", "winter", "zephyr",
    "café", "naïve", "über", "jalapeño", "smörgåsbord", "crème", "façade", "résumé",
    "piñata", "straße", "tōkyō", "fjörd", "mañana", "日本", "☕", "🚀",
)  # fmt: skip

_WORD_IDS = {w: i + 10 for i, w in enumerate(VOCABULARY)}  # ids 0..9 are "special"
_UNKNOWN_BASE = 1000


class RequestError(Exception):
    """A request the server rejects before generating: HTTP status, message, type."""

    def __init__(self, status: int, message: str, type_: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.extra = extra

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.status, "message": self.message, "type": self.type}
        err.update(self.extra)
        return {"error": err}


def tokenize(text: str) -> list[str]:
    """The fake tokenizer: whitespace-separated words."""
    return text.split()


def token_id(word: str) -> int:
    """Stable id of a word: vocabulary words get 10.., others a CRC-derived id."""
    wid = _WORD_IDS.get(word)
    if wid is not None:
        return wid
    return _UNKNOWN_BASE + zlib.crc32(word.encode("utf-8")) % 1_000_000


def content_text(content: Any) -> str:
    """Text of a message ``content``: a string, null, or an array of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
    return "\n".join(parts)


def chat_prompt(messages: Sequence[Any]) -> str:
    """Render chat messages with the fake template: one ``role: content`` line each."""
    lines = []
    for msg in messages:
        if not isinstance(msg, Mapping):
            continue
        role = msg.get("role") if isinstance(msg.get("role"), str) else ""
        lines.append(f"{role}: {content_text(msg.get('content'))}")
    return "\n".join(lines)


def prompt_text(body: Mapping[str, Any]) -> str:
    """The prompt a request generates from: rendered ``messages`` or ``prompt``."""
    if "messages" in body:
        messages = body["messages"]
        return chat_prompt(messages if isinstance(messages, list) else [])
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        # One prompt per request: a list of strings joins, token ids become words.
        return " ".join(str(p) for p in prompt)
    return prompt if isinstance(prompt, str) else json.dumps(prompt)


def _json_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def n_predict_of(body: Mapping[str, Any], default: int = -1) -> int:
    """Token limit as llama-server reads it: n_predict > max_completion_tokens > max_tokens."""
    for key in ("n_predict", "max_completion_tokens", "max_tokens"):
        value = _json_int(body, key)
        if value is not None:
            return value
    return default


def _stop_strings(body: Mapping[str, Any]) -> list[str]:
    stop = body.get("stop")
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list):
        return [s for s in stop if isinstance(s, str) and s]
    return []


def _material(body: Mapping[str, Any], seed: int) -> str:
    """What the generated text depends on, canonically serialised."""
    temperature = body.get("temperature", DEFAULT_TEMPERATURE)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        temperature = DEFAULT_TEMPERATURE
    req_seed = _json_int(body, "seed")
    kind = "chat" if "messages" in body else "text"
    return json.dumps(
        [seed, kind, prompt_text(body), -1 if req_seed is None else req_seed, float(temperature)],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _rng(material: str) -> random.Random:
    digest = hashlib.sha256(material.encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


@dataclass(frozen=True)
class Generation:
    """What a request will produce: its tokens, why it ends, and its prompt size."""

    tokens: tuple[str, ...]
    finish_reason: str  # "stop" | "length"
    n_prompt: int
    stop_type: str  # llama-server's stop_type: "eos" | "limit" | "word"
    stopping_word: str = ""

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def plan_generation(
    body: Mapping[str, Any],
    seed: int = 0,
    *,
    n_ctx: int | None = DEFAULT_N_CTX,
    n_predict_default: int = -1,
    prompt: str | None = None,
) -> Generation:
    """Plan a generation. Raises RequestError(400, exceed_context_size_error) when the
    prompt does not fit ``n_ctx`` (the per-slot context); ``n_ctx=None`` = unlimited.

    ``prompt`` is the prompt the request is counted by (a chat request's rendered
    template); it defaults to ``prompt_text(body)``. It never changes the text.
    """
    n_prompt = len(tokenize(prompt_text(body) if prompt is None else prompt))
    if n_ctx is not None and n_prompt >= n_ctx:
        raise RequestError(
            400,
            f"request ({n_prompt} tokens) exceeds the available context size "
            f"({n_ctx} tokens), try increasing it",
            "exceed_context_size_error",
            n_prompt_tokens=n_prompt,
            n_ctx=n_ctx,
        )
    rng = _rng(_material(body, seed))
    natural = rng.randint(MIN_NATURAL, MAX_NATURAL)

    limit = n_predict_of(body, n_predict_default)
    room = None if n_ctx is None else n_ctx - n_prompt
    caps = [c for c in (limit if limit >= 0 else None, room) if c is not None]
    cap = min(caps) if caps else None
    ignore_eos = body.get("ignore_eos") is True

    if ignore_eos:
        # Without EOS only the limit ends a generation; with no limit at all the fake
        # stops at MAX_NATURAL * 4 instead of running forever.
        count = cap if cap is not None else MAX_NATURAL * 4
        finish, stop_type = ("length", "limit")
    elif cap is not None and cap <= natural:
        # Reaching the limit wins over an EOS that would come next (llama-server order).
        count, finish, stop_type = cap, "length", "limit"
    else:
        count, finish, stop_type = natural, "stop", "eos"

    words = [rng.choice(VOCABULARY) for _ in range(count)]
    tokens = [" " + w for w in words]

    stops = _stop_strings(body)
    full = "".join(tokens)
    hits = [(full.find(s), s) for s in stops if s in full]
    if hits:
        pos, word = min(hits)
        return Generation(_cut_before(tokens, pos), "stop", n_prompt, "word", word)
    return Generation(tuple(tokens), finish, n_prompt, stop_type)


def _cut_before(tokens: Sequence[str], pos: int) -> tuple[str, ...]:
    """The tokens up to text position ``pos`` (an earliest stop string); the token it
    starts in is kept partially, like llama-server's stop-word handling."""
    kept: list[str] = []
    acc = 0
    for tok in tokens:
        if acc + len(tok) <= pos:
            kept.append(tok)
            acc += len(tok)
            continue
        if pos > acc:
            kept.append(tok[: pos - acc])
        break
    return tuple(kept)


def expected_text(
    request_body: Mapping[str, Any],
    seed: int = 0,
    *,
    n_ctx: int | None = DEFAULT_N_CTX,
    n_predict_default: int = -1,
) -> tuple[list[str], str]:
    """Tokens and finish_reason a fake server started with ``--seed seed`` produces for
    this request body (chat: ``messages``; completions: ``prompt``).

    ``"".join(tokens)`` is the full text of the stream or of the non-stream response.
    ``n_ctx`` is the per-slot context (``--ctx-size`` / ``--parallel``); it matters only
    for very long prompts or ``ignore_eos``. Faults never change the text.
    """
    gen = plan_generation(request_body, seed, n_ctx=n_ctx, n_predict_default=n_predict_default)
    return list(gen.tokens), gen.finish_reason


def embedding_vector(text: str, seed: int = 0, dim: int = EMBEDDING_DIM) -> list[float]:
    """A deterministic unit vector for ``text`` (L2 norm 1)."""
    rng = _rng(json.dumps(["embd", seed, text], ensure_ascii=False))
    vec = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def embedding_base64(vec: Sequence[float]) -> str:
    """OpenAI ``encoding_format: base64``: little-endian float32 bytes, base64."""
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode("ascii")
