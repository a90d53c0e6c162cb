"""The toxic vocabulary: which toxics exist, how one is configured, validated and parsed.

Toxics are named and parameterised exactly like Toxiproxy's
(https://github.com/Shopify/toxiproxy):

==============  ==============================================  =======================
type            attributes                                      effect
==============  ==============================================  =======================
``latency``     ``latency`` ms, ``jitter`` ms                   delay every chunk
``bandwidth``   ``rate`` KB/s (1 KB = 1000 bytes; 0 = no limit)  pace the bytes
``slow_close``  ``delay`` ms                                    delay the close
``timeout``     ``timeout`` ms (0 = never close)                drop data, then close
``reset_peer``  ``timeout`` ms                                  TCP RST after first data
``slicer``      ``average_size`` B, ``size_variation`` B,       split writes, pause
                ``delay`` µs                                    between pieces
``limit_data``  ``bytes`` B                                     close after N bytes
==============  ==============================================  =======================

``stream`` is ``upstream`` (client -> server) or ``downstream`` (server -> client);
``toxicity`` is the probability that a toxic applies to one connection. A ``Toxic`` is
only configuration; what each type does to the bytes lives in ``_toxic_stages``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from harness.netfault._errors import InvalidToxicError

#: Toxic type -> {attribute name: unit}. Same names and units as Toxiproxy.
TOXIC_TYPES: Mapping[str, Mapping[str, str]] = {
    "latency": {"latency": "ms", "jitter": "ms"},
    "bandwidth": {"rate": "KB/s"},
    "slow_close": {"delay": "ms"},
    "timeout": {"timeout": "ms"},
    "reset_peer": {"timeout": "ms"},
    "slicer": {"average_size": "bytes", "size_variation": "bytes", "delay": "us"},
    "limit_data": {"bytes": "bytes"},
}
STREAMS = ("upstream", "downstream")

_MAX_INT = 2**63 - 1  # Toxiproxy's attributes are int64
_JSON_FIELDS = frozenset({"name", "type", "stream", "toxicity", "attributes"})
_N = TypeVar("_N", int, float)


def _check_int(type_: str, key: str, value: object) -> int:
    # bool is an int subclass; True as a latency is a client bug, not 1 ms.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidToxicError(
            f"{type_}: attribute {key!r} must be an integer "
            f"({TOXIC_TYPES[type_][key]}), got {value!r}"
        )
    if not 0 <= value <= _MAX_INT:
        raise InvalidToxicError(f"{type_}: attribute {key!r} must be >= 0, got {value}")
    return value


def _check_toxicity(toxicity: object) -> float:
    if isinstance(toxicity, bool) or not isinstance(toxicity, int | float):
        raise InvalidToxicError(f"toxicity must be a number in [0, 1], got {toxicity!r}")
    if not 0.0 <= float(toxicity) <= 1.0:
        raise InvalidToxicError(f"toxicity must be in [0, 1], got {toxicity!r}")
    return float(toxicity)


def _check_attributes(type_: str, given: Mapping[str, object]) -> dict[str, int]:
    """Every attribute of ``type_``, validated; the ones not given are 0 like Toxiproxy's."""
    known = TOXIC_TYPES[type_]
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise InvalidToxicError(
            f"{type_}: unknown attribute(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(known) or 'none'}"
        )
    attrs = {key: _check_int(type_, key, given.get(key, 0)) for key in known}
    if type_ == "slicer":
        if attrs["average_size"] < 1:
            raise InvalidToxicError("slicer: attribute 'average_size' must be >= 1")
        if attrs["size_variation"] >= attrs["average_size"]:
            raise InvalidToxicError(
                "slicer: attribute 'size_variation' must be smaller than 'average_size'"
            )
    return attrs


@dataclass(frozen=True)
class Toxic:
    """One configured toxic: what it is, which direction, how often, with what settings.

    Build it with ``Toxic.create`` (validates and fills defaults) or ``from_json``.
    """

    name: str
    type: str
    stream: str
    toxicity: float
    attributes: Mapping[str, int]

    @classmethod
    def create(
        cls,
        type: str,
        *,
        name: str | None = None,
        stream: str = "downstream",
        toxicity: float = 1.0,
        attributes: Mapping[str, object] | None = None,
    ) -> Toxic:
        """Validate everything; unset attributes default to 0 like Toxiproxy's."""
        if not isinstance(type, str) or type not in TOXIC_TYPES:
            raise InvalidToxicError(
                f"unknown toxic type {type!r}; known: {', '.join(sorted(TOXIC_TYPES))}"
            )
        if stream not in STREAMS:
            raise InvalidToxicError(f"stream must be 'upstream' or 'downstream', got {stream!r}")
        checked_toxicity = _check_toxicity(toxicity)
        if name is None:
            name = f"{type}_{stream}"
        if not isinstance(name, str) or not name or "/" in name or len(name) > 200:
            raise InvalidToxicError(
                f"name must be a non-empty string without '/' (<= 200 chars), got {name!r}"
            )
        attrs = _check_attributes(type, dict(attributes or {}))
        return cls(name, type, stream, checked_toxicity, attrs)

    @classmethod
    def from_json(cls, obj: object) -> Toxic:
        """Parse Toxiproxy's toxic JSON: ``{name, type, stream, toxicity, attributes}``."""
        if not isinstance(obj, dict):
            raise InvalidToxicError("toxic must be a JSON object")
        extra = sorted(set(obj) - _JSON_FIELDS)
        if extra:
            raise InvalidToxicError(f"unknown field(s) {', '.join(map(repr, extra))}")
        if "type" not in obj:
            raise InvalidToxicError("missing field 'type'")
        attributes = obj.get("attributes", {})
        if attributes is None:
            attributes = {}
        if not isinstance(attributes, dict):
            raise InvalidToxicError("'attributes' must be a JSON object")
        return cls.create(
            obj["type"],
            name=obj.get("name"),
            stream=obj.get("stream", "downstream"),
            toxicity=obj.get("toxicity", 1.0),
            attributes=attributes,
        )

    def to_json(self) -> dict[str, Any]:
        """Toxiproxy's JSON shape for this toxic."""
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": dict(self.attributes),
        }


def parse_toxic_spec(spec: str) -> Toxic:
    """Parse the CLI form ``TYPE[:STREAM[:KEY=VALUE,...]]``.

    ``name`` and ``toxicity`` may appear among the keys, e.g.
    ``latency:downstream:latency=100,jitter=10,toxicity=0.5,name=slow``.
    """
    parts = spec.split(":", 2)
    type_ = parts[0].strip()
    stream = parts[1].strip() if len(parts) > 1 and parts[1].strip() else "downstream"
    attributes: dict[str, object] = {}
    name: str | None = None
    toxicity = 1.0
    if len(parts) > 2 and parts[2].strip():
        for item in parts[2].split(","):
            key, raw = _split_pair(item, spec)
            if key == "name":
                name = raw
            elif key == "toxicity":
                toxicity = _spec_number(raw, float, "toxicity must be a number")
            else:
                attributes[key] = _spec_number(raw, int, f"attribute {key!r} must be an integer")
    return Toxic.create(type_, name=name, stream=stream, toxicity=toxicity, attributes=attributes)


def _split_pair(item: str, spec: str) -> tuple[str, str]:
    key, sep, raw = item.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key or not raw:
        raise InvalidToxicError(f"bad attribute {item!r} in {spec!r}; expected KEY=VALUE")
    return key, raw


def _spec_number(raw: str, kind: Callable[[str], _N], message: str) -> _N:
    try:
        return kind(raw)
    except ValueError:
        raise InvalidToxicError(f"{message}, got {raw!r}") from None
