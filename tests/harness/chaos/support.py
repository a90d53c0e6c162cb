"""Shared by the chaos tests: plan and result factories, the spawn-mode settings and
the sum rule of the report's tables."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from harness.chaos.kinds import CHAT, FIRST_KINDS, KINDS, SUCCEED
from harness.chaos.plan import PlanSettings, RequestPlan
from harness.chaos.stack import EMBED_ALIAS, LIVE_ALIAS, StackSettings
from harness.client import StreamResult

# What the first mix offered (the kinds before ping, live_fault, embeddings, startup
# and freeze): its draws must stay what they were.
FIRST_SPAWN_SETTINGS = PlanSettings(
    aliases=("chaos-a", "chaos-b"),
    managed_alias="chaos-managed",
    lanes=3,
    idle_timeout=1.5,
    header_timeout=2.5,
    kinds=FIRST_KINDS,
)
# Everything spawn mode offers today.
SPAWN_SETTINGS = replace(
    FIRST_SPAWN_SETTINGS,
    live_alias=LIVE_ALIAS,
    embed_alias=EMBED_ALIAS,
    startup_aliases=StackSettings(startup=True).startup_aliases,
    freeze=True,
    kinds=tuple(KINDS),
)


def make_plan(kind: str = "clean", **kw: Any) -> RequestPlan:
    """A hand-made plan: a clean stream of three tokens unless ``kw`` says otherwise."""
    tokens = (" river", " café", " 日本")
    base: dict[str, Any] = dict(
        index=7,
        kind=kind,
        route="direct",
        alias="m",
        endpoint=CHAT,
        body={"model": "m", "stream": True},
        spec="",
        toxic=None,
        disconnect_after=None,
        expect=SUCCEED,
        skippable=False,
        tokens=tokens,
        finish_reason="stop",
        alt_text=None,
        n_events=6,
        delay=0.0,
        deadline=5.0,
    )
    base.update(kw)
    return RequestPlan(**base)


def make_result(outcome: str = "done", **kw: Any) -> StreamResult:
    """A hand-made result: the whole text of ``make_plan()`` unless ``kw`` says otherwise."""
    base: dict[str, Any] = dict(
        outcome=outcome,
        status=200,
        headers={"content-type": ["text/event-stream"]},
        text=" river café 日本",
        finish_reason="stop",
        model="m",
        ids={"chatcmpl-1"},
        t_start=0.0,
        t_end=0.5,
    )
    base.update(kw)
    return StreamResult(**base)


def tables_add_up(data: dict[str, Any]) -> None:
    """The per-kind table, the outcome counts and the records of a JSON report agree."""
    kinds = data["kinds"]
    assert sum(row["requests"] for row in kinds.values()) == data["requests"]
    for kind, row in kinds.items():
        assert sum(row["outcomes"].values()) == row["requests"], kind
    for outcome, n in data["outcomes"].items():
        assert sum(row["outcomes"][outcome] for row in kinds.values()) == n
    assert sum(row["violations"] for row in kinds.values()) == len(data["violations"])
    assert len(data["records"]) == data["requests"]
