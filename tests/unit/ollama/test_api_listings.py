"""OllamaApi's listings over an alias store and a shared context: names, ps expiry, show."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from server_core.aliases import DefaultAliasStore, LocalAlias
from server_core.errors import NotFound
from server_core.ollama.api import OllamaApi
from server_core.testing import StubRouter
from tests.unit.ollama.gguf_files import write_gguf


class Context:
    """The two ISharedContext answers ps asks for."""

    def __init__(self, rows: list[dict[str, Any]], ttls: dict[str, float | None]) -> None:
        self.rows = rows
        self.ttls = ttls

    def running(self) -> list[dict[str, Any]]:
        return self.rows

    def keep_alive(self, alias_name: str, seconds: float | None = None) -> float | None:
        return self.ttls.get(alias_name)


class Router(StubRouter):
    def __init__(self, store: DefaultAliasStore) -> None:
        super().__init__()
        self._store = store

    def list_models(self) -> list[dict[str, Any]]:
        return self._store.list_models()

    def get_model(self, model_id: str) -> dict[str, Any] | None:
        return next((m for m in self.list_models() if m["id"] == model_id), None)


def api(tmp_path: Path, rows: list[dict[str, Any]], ttls: dict[str, float | None]) -> OllamaApi:
    path = str(write_gguf(tmp_path / "m.gguf"))
    aliases = [LocalAlias(name, path, "user", {}) for name in ("a", "b", "c", "d")]
    store = DefaultAliasStore(user=aliases, created=0)
    clock = Clock()
    clock.advance(1000)
    context: Any = Context(rows, ttls)
    return OllamaApi(Router(store), clock=clock, aliases=store, context=context)


def test_ps_expiry_from_the_ttl_in_force(tmp_path: Path) -> None:
    rows = [
        {"alias": "a", "state": "ready", "in_flight": 1},
        {"alias": "b", "state": "ready", "in_flight": 0},
        {"alias": "c", "state": "queued", "in_flight": 0},
        {"alias": "d", "state": "ready", "in_flight": 0},
    ]
    listed = api(tmp_path, rows, {"a": 60.0, "b": -1.0, "c": 5.0, "d": None}).ps()["models"]
    assert [m["name"] for m in listed] == ["a", "b"]  # queued: not loaded; d: gone meanwhile
    assert listed[0]["expires_at"] == "1970-01-01T00:17:40Z"  # now (1000 s) + 60 s
    assert listed[1]["expires_at"].startswith("2069-")  # kept loaded
    assert listed[0]["details"]["family"] == "llama"


def test_names_with_latest_find_the_bare_alias_and_unknown_ones_are_404(tmp_path: Path) -> None:
    listings = api(tmp_path, [], {})
    assert listings.show({"model": "a:latest"})["model_info"]["general.architecture"] == "llama"
    assert [m["name"] for m in listings.tags()["models"]] == ["a", "b", "c", "d"]
    with pytest.raises(NotFound, match="/api/tags"):
        listings.show({"model": "zzz:latest"})
