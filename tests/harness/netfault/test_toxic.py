"""Tests for harness.netfault._toxic: validation, defaults, JSON shape and the CLI spec."""

from __future__ import annotations

from typing import Any

import pytest

from harness.netfault import (
    InvalidToxicError,
    Toxic,
    parse_toxic_spec,
)

pytestmark = pytest.mark.timeout(20)


def test_toxic_defaults_and_json_shape() -> None:
    toxic = Toxic.create("latency", attributes={"latency": 100})
    assert toxic.to_json() == {
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": {"latency": 100, "jitter": 0},
    }
    assert Toxic.from_json(toxic.to_json()) == toxic


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"type": "nope"}, "unknown toxic type"),
        ({"type": "latency", "stream": "sideways"}, "stream must be"),
        ({"type": "latency", "toxicity": 1.5}, "toxicity must be in"),
        ({"type": "latency", "toxicity": "x"}, "toxicity must be a number"),
        ({"type": "latency", "attributes": {"latency": -1}}, ">= 0"),
        ({"type": "latency", "attributes": {"latency": 1.5}}, "must be an integer"),
        ({"type": "latency", "attributes": {"latency": True}}, "must be an integer"),
        ({"type": "latency", "attributes": {"rate": 1}}, "unknown attribute"),
        ({"type": "slicer", "attributes": {"average_size": 0}}, "average_size"),
        (
            {"type": "slicer", "attributes": {"average_size": 10, "size_variation": 10}},
            "smaller than",
        ),
        ({"type": "latency", "colour": "red"}, "unknown field"),
        ({"stream": "upstream"}, "missing field 'type'"),
        ({"type": "latency", "name": ""}, "name must be"),
        ([], "JSON object"),
    ],
)
def test_toxic_validation_messages(obj: Any, message: str) -> None:
    with pytest.raises(InvalidToxicError, match=message):
        Toxic.from_json(obj)


def test_parse_toxic_spec() -> None:
    toxic = parse_toxic_spec("latency:upstream:latency=100,jitter=10,toxicity=0.5,name=slow")
    assert (toxic.name, toxic.type, toxic.stream, toxic.toxicity) == (
        "slow",
        "latency",
        "upstream",
        0.5,
    )
    assert toxic.attributes == {"latency": 100, "jitter": 10}
    assert parse_toxic_spec("timeout").to_json()["attributes"] == {"timeout": 0}
    with pytest.raises(InvalidToxicError, match="KEY=VALUE"):
        parse_toxic_spec("latency:downstream:latency")
    with pytest.raises(InvalidToxicError, match="integer"):
        parse_toxic_spec("latency:downstream:latency=fast")
