"""Routes that describe the server: health, models, props, slots, metrics."""

from __future__ import annotations

import pytest_twisted

from tests.harness.fake_llama._support import CHAT, assert_error, req, start


@pytest_twisted.ensureDeferred
async def test_health_models_props_slots() -> None:
    server = await start(model_path=None, alias="tiny", ctx_size=1024, parallel=2)
    try:
        res = await req(server, "GET", "/health")
        assert res.status == 200 and res.json() == {"status": "ok"}
        assert res.header("server") == "llama.cpp"
        assert (await req(server, "GET", "/v1/health")).json() == {"status": "ok"}
        head = await req(server, "HEAD", "/health")
        assert head.status == 200 and head.body == b""
        for path in ("/v1/models", "/models"):
            models = (await req(server, "GET", path)).json()
            assert models["object"] == "list"
            [entry] = models["data"]
            assert entry["id"] == "tiny" and entry["object"] == "model"
            assert entry["owned_by"] == "llamacpp" and isinstance(entry["created"], int)
            assert entry["meta"]["n_ctx"] == 512  # -c split between -np slots
            assert models["models"][0]["name"] == "tiny"
        props = (await req(server, "GET", "/props")).json()
        assert props["total_slots"] == 2 and props["model_alias"] == "tiny"
        assert props["default_generation_settings"]["n_ctx"] == 512
        slots = (await req(server, "GET", "/slots")).json()
        assert [s["id"] for s in slots] == [0, 1]
        assert not any(s["is_processing"] for s in slots)
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_metrics_only_with_flag() -> None:
    server = await start()
    try:
        msg = "This server does not support metrics endpoint. Start it with `--metrics`"
        assert_error(await req(server, "GET", "/metrics"), 501, "not_supported_error", msg)
    finally:
        await server.stop()
    server = await start(metrics=True)
    try:
        await req(server, "POST", "/v1/chat/completions", CHAT)
        res = await req(server, "GET", "/metrics")
        assert res.status == 200
        text = res.body.decode()
        assert "# TYPE llamacpp:requests_processing gauge" in text
        assert "llamacpp:prompt_tokens_total 5" in text
        assert "fake_llama_requests_total 1" in text
        assert "fake_llama_cancelled_total 0" in text
    finally:
        await server.stop()
