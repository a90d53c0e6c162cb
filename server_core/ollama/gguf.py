"""A small GGUF header reader: what ``/api/tags`` and ``/api/show`` say about a model file.

A GGUF file (v2 and v3, little-endian) starts with ``GGUF``, a version, the tensor count
and the key-value count, then the typed key-value pairs, then one info record per tensor.
Only the scalar and string values asked for are kept; arrays (the tokenizer's 150 000
tokens) are skipped by seeking, and the tensor infos are only multiplied out for the
parameter count. Every read is bounded: a string value over ``MAX_STRING`` or a header
over ``MAX_HEADER`` bytes ends the reading with ``GgufError``, so a corrupt or hostile
file can never make the server load it whole.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

__all__ = ["FILE_TYPES", "GgufCache", "GgufError", "GgufInfo", "read_gguf_info"]

MAGIC = b"GGUF"
MAX_STRING = 1 << 20  # a chat template is a few KiB; a megabyte is already suspicious
MAX_HEADER = 128 << 20  # a large vocabulary's arrays take tens of MiB
MAX_COUNT = 1 << 24

_SCALARS: dict[int, str] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING = 8
_ARRAY = 9
_U64 = struct.Struct("<Q")
_BLOCK = 1 << 20

# llama.cpp's ``llama_ftype``: what ``general.file_type`` numbers mean.
FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}


class GgufError(ValueError):
    """The file is not a GGUF file this reader understands, or its header is broken."""


@dataclass(frozen=True)
class GgufInfo:
    """What a GGUF header says about its model (None where it says nothing)."""

    version: int
    architecture: str | None = None
    basename: str | None = None
    name: str | None = None
    size_label: str | None = None
    file_type: int | None = None
    context_length: int | None = None
    embedding_length: int | None = None
    parameter_count: int | None = None
    chat_template: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    """Every scalar or string key-value pair read (arrays are skipped)."""

    @property
    def quantization(self) -> str | None:
        """``Q4_K_M`` and the like, from ``general.file_type``."""
        if self.file_type is None:
            return None
        return FILE_TYPES.get(self.file_type, f"type {self.file_type}")


class _Reader:
    """Bounded little-endian reads from one open file."""

    def __init__(self, file: BinaryIO, limit: int) -> None:
        self._file = file
        self._limit = limit
        self._size = os.fstat(file.fileno()).st_size

    def take(self, size: int) -> bytes:
        if size < 0 or self._file.tell() + size > self._limit:
            raise GgufError(f"the GGUF header is larger than {self._limit} bytes")
        data = self._file.read(size)
        if len(data) != size:
            raise GgufError("the GGUF header ends before its last key-value pair")
        return data

    def skip(self, size: int) -> None:
        if size < 0 or self._file.tell() + size > self._limit:
            raise GgufError(f"the GGUF header is larger than {self._limit} bytes")
        if self._file.tell() + size > self._size:
            raise GgufError("the GGUF header ends before its last key-value pair")
        self._file.seek(size, os.SEEK_CUR)

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def count(self) -> int:
        value = int(self.unpack("<Q"))
        if value > MAX_COUNT:
            raise GgufError(f"the GGUF header claims {value} entries; that is not a model file")
        return value

    def string(self) -> str:
        size = int(self.unpack("<Q"))
        if size > MAX_STRING:
            raise GgufError(f"a GGUF string of {size} bytes is longer than {MAX_STRING}")
        return self.take(size).decode("utf-8", "replace")

    def skip_string(self) -> None:
        self.skip(int(self.unpack("<Q")))

    def skip_strings(self, count: int) -> None:
        """Skip ``count`` strings, walking blocks in memory: a vocabulary has 150 000."""
        base, block, at = self._file.tell(), b"", 0
        for _ in range(count):
            if at + 8 > len(block):
                base, at = base + at, 0
                block = self._block(base)
            size = _U64.unpack_from(block, at)[0]
            if size > MAX_STRING:
                raise GgufError(f"a GGUF string of {size} bytes is longer than {MAX_STRING}")
            at += 8 + size
        self._file.seek(base)
        self.skip(at)

    def _block(self, position: int) -> bytes:
        if position + 8 > self._limit:
            raise GgufError(f"the GGUF header is larger than {self._limit} bytes")
        self._file.seek(position)
        block = self._file.read(_BLOCK)
        if len(block) < 8:
            raise GgufError("the GGUF header ends before its last key-value pair")
        return block


def _value(reader: _Reader, kind: int, keep: bool) -> Any:
    """One typed value; arrays and unwanted strings are skipped (None)."""
    if kind in _SCALARS:
        return reader.unpack(_SCALARS[kind])
    if kind == _STRING:
        if keep:
            return reader.string()
        reader.skip_string()
        return None
    if kind == _ARRAY:
        item_kind = int(reader.unpack("<I"))
        count = reader.count()
        if item_kind in _SCALARS:
            reader.skip(count * struct.calcsize(_SCALARS[item_kind]))
        elif item_kind == _STRING:
            reader.skip_strings(count)
        else:
            for _ in range(count):
                _value(reader, item_kind, False)
        return None
    raise GgufError(f"unknown GGUF value type {kind}")


def _parameters(reader: _Reader, tensors: int) -> int:
    """The sum of every tensor's element count, from the tensor infos."""
    total = 0
    for _ in range(tensors):
        reader.skip_string()
        dims = int(reader.unpack("<I"))
        if dims > 8:
            raise GgufError(f"a GGUF tensor with {dims} dimensions")
        elements = 1
        for _ in range(dims):
            elements *= int(reader.unpack("<Q"))
        reader.skip(4 + 8)  # the tensor's type and data offset
        total += elements
    return total


def _wanted(key: str) -> bool:
    # Strings worth holding: general.*, the architecture's own and the chat template.
    return not key.startswith("tokenizer.") or key == "tokenizer.chat_template"


def _info(version: int, values: dict[str, Any], parameters: int | None) -> GgufInfo:
    arch = values.get("general.architecture")
    arch = arch if isinstance(arch, str) else None

    def text(key: str) -> str | None:
        value = values.get(key)
        return value if isinstance(value, str) else None

    def number(key: str) -> int | None:
        value = values.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return GgufInfo(
        version=version,
        architecture=arch,
        basename=text("general.basename"),
        name=text("general.name"),
        size_label=text("general.size_label"),
        file_type=number("general.file_type"),
        context_length=number(f"{arch}.context_length") if arch else None,
        embedding_length=number(f"{arch}.embedding_length") if arch else None,
        parameter_count=number("general.parameter_count") or parameters or None,
        chat_template=text("tokenizer.chat_template"),
        values=values,
    )


def read_gguf_info(path: str, *, limit: int = MAX_HEADER) -> GgufInfo:
    """The header of the GGUF file at ``path``; ``GgufError`` or ``OSError`` otherwise."""
    with open(path, "rb") as file:
        reader = _Reader(file, limit)
        if reader.take(4) != MAGIC:
            raise GgufError("not a GGUF file (its first bytes are not 'GGUF')")
        version = int(reader.unpack("<I"))
        if version not in (2, 3):
            raise GgufError(f"GGUF version {version} is not supported (2 and 3 are)")
        tensors = reader.count()
        pairs = reader.count()
        values: dict[str, Any] = {}
        for _ in range(pairs):
            key = reader.string()
            kind = int(reader.unpack("<I"))
            value = _value(reader, kind, _wanted(key))
            if value is not None:
                values[key] = value
        try:
            parameters: int | None = _parameters(reader, tensors)
        except GgufError:
            parameters = None  # a header cut after its key-value pairs still says much
    return _info(version, values, parameters)


Reader = Callable[[str], GgufInfo]


class GgufCache:
    """``read_gguf_info`` once per file version (path, size, mtime); failures are None."""

    def __init__(self, read: Reader = read_gguf_info) -> None:
        self._read = read
        self._known: dict[str, tuple[tuple[int, int], GgufInfo | None]] = {}

    def info(self, path: str) -> GgufInfo | None:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        stamp = (stat.st_size, stat.st_mtime_ns)
        known = self._known.get(path)
        if known is not None and known[0] == stamp:
            return known[1]
        try:
            info: GgufInfo | None = self._read(path)
        except (GgufError, OSError):
            info = None
        self._known[path] = (stamp, info)
        return info
