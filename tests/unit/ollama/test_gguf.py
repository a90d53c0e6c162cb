"""The GGUF header reader: what a header says, read with bounded reads, broken ones refused."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from server_core.ollama import gguf
from server_core.ollama.gguf import GgufCache, GgufError, read_gguf_info
from tests.unit.ollama.gguf_files import (
    ARRAY,
    LLAMA_PAIRS,
    LLAMA_TENSORS,
    STRING,
    TEMPLATE,
    UINT32,
    gguf_bytes,
    gguf_string,
    write_gguf,
)


def test_reads_architecture_names_quantization_context_and_parameters(tmp_path: Path) -> None:
    info = read_gguf_info(str(write_gguf(tmp_path / "m.gguf")))
    assert info.version == 3 and info.architecture == "llama"
    assert info.basename == "Tiny-Llama" and info.name == "Tiny Llama 1B"
    assert info.file_type == 15 and info.quantization == "Q4_K_M"
    assert info.context_length == 8192 and info.embedding_length == 64
    assert info.parameter_count == 64 * 1000 * 2 + 64
    assert info.chat_template == TEMPLATE
    # Arrays are skipped, never held.
    assert "tokenizer.ggml.tokens" not in info.values
    assert info.values["general.file_type"] == 15


def test_version_2_and_an_explicit_parameter_count(tmp_path: Path) -> None:
    pairs = [*LLAMA_PAIRS, ("general.parameter_count", 10, 1_234_567_890)]
    path = write_gguf(tmp_path / "m.gguf", gguf_bytes(pairs, LLAMA_TENSORS, version=2))
    info = read_gguf_info(str(path))
    assert info.version == 2 and info.parameter_count == 1_234_567_890


def test_a_header_without_tensor_infos_still_reads(tmp_path: Path) -> None:
    data = gguf_bytes(LLAMA_PAIRS, LLAMA_TENSORS)
    cut = data[: data.index(b"token_embd.weight") - 8]  # the kv pairs, no tensor info
    info = read_gguf_info(str(write_gguf(tmp_path / "m.gguf", cut)))
    assert info.architecture == "llama" and info.parameter_count is None


def test_unknown_file_type_is_named_by_number(tmp_path: Path) -> None:
    pairs = [("general.architecture", STRING, "qwen2"), ("general.file_type", UINT32, 99)]
    info = read_gguf_info(str(write_gguf(tmp_path / "m.gguf", gguf_bytes(pairs))))
    assert info.quantization == "type 99" and info.context_length is None


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"GGML" + b"\0" * 20, "not a GGUF file"),
        (gguf_bytes([], version=1), "version 1"),
        (gguf_bytes(LLAMA_PAIRS)[:60], "ends before"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1 << 40), "entries"),
        (
            b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 30),
            "longer than",
        ),
        (
            b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_string("k") + struct.pack("<I", 42),
            "unknown GGUF value type",
        ),
    ],
)
def test_broken_headers_are_refused(tmp_path: Path, data: bytes, what: str) -> None:
    with pytest.raises(GgufError, match=what):
        read_gguf_info(str(write_gguf(tmp_path / "bad.gguf", data)))


def test_reads_stop_at_the_limit(tmp_path: Path) -> None:
    big = [("tokenizer.ggml.tokens", ARRAY, (STRING, ["x" * 100] * 100))]
    path = write_gguf(tmp_path / "m.gguf", gguf_bytes(big))
    with pytest.raises(GgufError, match="larger than 4096 bytes"):
        read_gguf_info(str(path), limit=4096)
    assert read_gguf_info(str(path)).architecture is None


def test_cache_reads_once_per_file_version_and_hides_failures(tmp_path: Path) -> None:
    calls: list[str] = []

    def counting(path: str):  # type: ignore[no-untyped-def]
        calls.append(path)
        return read_gguf_info(path)

    cache = GgufCache(counting)
    path = write_gguf(tmp_path / "m.gguf")
    first = cache.info(str(path))
    assert first is not None and cache.info(str(path)) is first and len(calls) == 1
    path.write_bytes(b"GGML not any more")
    assert cache.info(str(path)) is None and len(calls) == 2
    assert cache.info(str(tmp_path / "missing.gguf")) is None


def test_string_arrays_are_walked_in_blocks_whatever_the_block_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    words = [("w" * (i % 23)) for i in range(500)]
    pairs = [("tokenizer.ggml.tokens", ARRAY, (STRING, words)), *LLAMA_PAIRS[:5]]
    path = write_gguf(tmp_path / "m.gguf", gguf_bytes(pairs, LLAMA_TENSORS))
    expected = read_gguf_info(str(path))
    for block in (8, 9, 31, 64, 4096):
        monkeypatch.setattr(gguf, "_BLOCK", block)
        assert read_gguf_info(str(path)) == expected
    assert expected.architecture == "llama" and expected.parameter_count == 128064


def test_a_string_array_cut_short_or_with_a_giant_string_is_refused(tmp_path: Path) -> None:
    pairs = [("tokenizer.ggml.tokens", ARRAY, (STRING, ["abc"] * 100))]
    data = gguf_bytes(pairs)
    for cut in (200, 1, 5):  # in a length, at the end of the last string, in a length
        with pytest.raises(GgufError, match="ends before"):
            read_gguf_info(str(write_gguf(tmp_path / "cut.gguf", data[:-cut])))
    giant = data[: data.index(b"abc") - 8] + struct.pack("<Q", 1 << 40) + b"abc"
    with pytest.raises(GgufError, match="longer than"):
        read_gguf_info(str(write_gguf(tmp_path / "giant.gguf", giant)))
