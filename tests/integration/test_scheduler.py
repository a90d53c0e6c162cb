"""Batching by model end to end: three managed fake llama-servers of one GGUF on one slot.

The same seeded mix with ``max_wait: 0`` (arrival order) costs a start per change of
model; batched, far fewer. Every answer must be complete and from the alias asked for,
and ``/running``'s rows carry the scheduler's figures.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from harness.client import stream_request
from tests.integration.procs import reactor
from tests.integration.test_managed import managed

pytestmark = pytest.mark.timeout(120)

ALIASES = ("alpha", "beta", "gamma")
FLAGS = ["--fault", "load_delay=300ms"]


async def replay(tmp_path: Path, max_wait: float, clients: int = 12, requests: int = 36) -> Any:
    """Run the seeded mix; (starts, changes of model in arrival order, wrong answers, rows)."""
    rng = random.Random(16)
    workload = [rng.choice(ALIASES) for _ in range(requests)]
    sent: list[tuple[float, str]] = []
    wrong: list[str] = []
    folder = tmp_path / f"max_wait_{max_wait:g}"
    folder.mkdir()
    async with managed(folder, dict.fromkeys(ALIASES, FLAGS), max_loaded=1,
                       max_wait=max_wait, max_queue=1000) as m:  # fmt: skip
        url = m.url + "/v1/chat/completions"

        async def client() -> None:
            while workload:
                name = workload.pop(0)
                body = {"model": name, "max_tokens": 3, "stream": True,
                        "messages": [{"role": "user", "content": f"hi {name}"}]}  # fmt: skip
                sent.append((reactor.seconds(), name))
                result = await stream_request(url, body, timeout=60)
                if result.outcome != "done" or result.model != name:
                    wrong.append(f"{name}: {result.summary()}")

        await defer.gatherResults([defer.ensureDeferred(client()) for _ in range(clients)])
        starts = m.context.starts
        running = await stream_request(m.url + "/running", None, method="GET", timeout=10)
        rows = json.loads(running.body or b"{}").get("data", [])
    order = [name for _, name in sorted(sent)]
    changes = sum(1 for before, after in itertools.pairwise(order) if before != after)
    return starts, changes, wrong, rows


@pytest_twisted.ensureDeferred
async def test_batching_needs_far_fewer_starts_than_arrival_order(tmp_path: Path) -> None:
    arrival_starts, arrival_changes, wrong, _ = await replay(tmp_path, max_wait=0)
    assert not wrong, wrong
    assert arrival_starts >= arrival_changes * 3 // 4  # a start per change, or nearly
    starts, changes, wrong, rows = await replay(tmp_path, max_wait=30)
    assert not wrong, wrong
    assert changes >= 10 and starts <= changes // 2, (starts, changes)
    (row,) = rows  # the model loaded last
    assert row["waiting"] == 0 and row["swaps"] == starts - 1 and row["wait_max"] is not None
