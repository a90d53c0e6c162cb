"""Tiny GGUF files written by the tests themselves (header only, no tensor data)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64 = 4, 5, 6, 7, 8, 9, 10


def gguf_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def gguf_value(kind: int, value: Any) -> bytes:
    if kind == STRING:
        return gguf_string(value)
    if kind == ARRAY:
        item_kind, items = value
        body = b"".join(gguf_value(item_kind, item) for item in items)
        return struct.pack("<IQ", item_kind, len(items)) + body
    fmt = {UINT32: "<I", INT32: "<i", FLOAT32: "<f", BOOL: "<?", UINT64: "<Q"}[kind]
    return struct.pack(fmt, value)


def gguf_bytes(
    pairs: list[tuple[str, int, Any]],
    tensors: list[tuple[str, list[int]]] = (),  # type: ignore[assignment]
    *,
    version: int = 3,
    magic: bytes = b"GGUF",
) -> bytes:
    out = magic + struct.pack("<IQQ", version, len(tensors), len(pairs))
    for key, kind, value in pairs:
        out += gguf_string(key) + struct.pack("<I", kind) + gguf_value(kind, value)
    for name, dims in tensors:
        out += gguf_string(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", 0, 0)
    return out


TEMPLATE = "{% for m in messages %}{{ m.content }}{% endfor %}{% if tools %}tools{% endif %}"

LLAMA_PAIRS: list[tuple[str, int, Any]] = [
    ("general.architecture", STRING, "llama"),
    ("general.basename", STRING, "Tiny-Llama"),
    ("general.name", STRING, "Tiny Llama 1B"),
    ("general.file_type", UINT32, 15),
    ("llama.context_length", UINT32, 8192),
    ("llama.embedding_length", UINT32, 64),
    ("tokenizer.ggml.tokens", ARRAY, (STRING, ["<s>", "</s>", "hello"] * 50)),
    ("tokenizer.ggml.scores", ARRAY, (FLOAT32, [0.5] * 150)),
    ("tokenizer.chat_template", STRING, TEMPLATE),
]

LLAMA_TENSORS = [("token_embd.weight", [64, 1000]), ("output.weight", [64, 1000]), ("b", [64])]


def write_gguf(path: Path, data: bytes | None = None) -> Path:
    path.write_bytes(gguf_bytes(LLAMA_PAIRS, LLAMA_TENSORS) if data is None else data)
    return path
