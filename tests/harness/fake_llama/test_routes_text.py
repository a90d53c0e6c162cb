"""Text utility routes: /tokenize and /detokenize."""

from __future__ import annotations

import pytest_twisted

from tests.harness.fake_llama._support import req, start


@pytest_twisted.ensureDeferred
async def test_tokenize_detokenize() -> None:
    server = await start()
    try:
        res = await req(server, "POST", "/tokenize", {"content": "river zzz river"})
        ids = res.json()["tokens"]
        assert len(ids) == 3 and ids[0] == ids[2] != ids[1]
        res = await req(server, "POST", "/detokenize", {"tokens": ids})
        assert res.json() == {"content": "river zzz river"}
        res = await req(server, "POST", "/tokenize", {"content": "a b", "with_pieces": True})
        assert [t["piece"] for t in res.json()["tokens"]] == ["a", "b"]
    finally:
        await server.stop()
