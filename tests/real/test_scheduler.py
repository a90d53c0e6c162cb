"""Batching by model on the real llama-server: three aliases of the chat GGUF on one slot.

Twelve clients send a seeded random mix of the three. In arrival order that is a process
start per change of model (the issue measured 148 starts for 146 changes); batched, a
loaded model serves what waits for it before a swap, so starts are a fraction of the
changes. Every answer must come back complete and from the alias it asked for.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer

from harness.client import stream_request
from tests.integration.procs import reactor
from tests.integration.test_managed import managed

pytestmark = pytest.mark.timeout(120)

ALIASES = ("alpha", "beta", "gamma")
FLAGS = ["--ctx-size", "1024", "-np", "4"]
CLIENTS = 12
REQUESTS = 72


@pytest_twisted.ensureDeferred
async def test_mixed_models_on_one_slot_batch_by_model(
    tmp_path: Path, llama_server: str, gguf: str
) -> None:
    rng = random.Random(16)
    workload = [rng.choice(ALIASES) for _ in range(REQUESTS)]
    sent: list[tuple[float, str]] = []
    wrong: list[str] = []
    aliases = dict.fromkeys(ALIASES, FLAGS)
    async with managed(tmp_path, aliases, executable=llama_server, model=gguf,
                       start_timeout=60, max_loaded=1, max_wait=30) as m:  # fmt: skip
        url = m.url + "/v1/chat/completions"

        async def client() -> None:
            while workload:
                name = workload.pop(0)
                body = {"model": name, "max_tokens": 4, "stream": True, "temperature": 0,
                        "messages": [{"role": "user", "content": "Say hi."}]}  # fmt: skip
                sent.append((reactor.seconds(), name))
                result = await stream_request(url, body, timeout=60)
                if result.outcome != "done" or result.model != name or not result.text:
                    wrong.append(f"{name}: {result.summary()}")

        await defer.gatherResults([defer.ensureDeferred(client()) for _ in range(CLIENTS)])
        starts = m.context.starts
    order = [name for _, name in sorted(sent)]
    changes = sum(1 for before, after in itertools.pairwise(order) if before != after)
    print(f"real scheduler: {starts} starts for {changes} changes of model")
    assert not wrong, wrong
    assert changes >= REQUESTS // 2, changes  # the mix really alternates
    assert starts <= changes // 3, (starts, changes)
