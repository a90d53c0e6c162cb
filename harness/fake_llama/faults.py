"""Fault SPEC strings: parsing, merging and printing.

A SPEC is one compact string of comma-separated items, each ``key=value`` or a bare
flag: ``ttft=500ms,token_delay=20ms,reset_after=5``. Durations take ``ms`` or ``s``
(a bare number means milliseconds). Names follow Toxiproxy where one exists.

Faults come in two groups:

* process faults (``PROCESS_KEYS``) shape the life of the server process: loading,
  binding, signals. They are read once at start (``--fault`` / ``FAKE_LLAMA_FAULT``).
* request faults (everything else) shape one generation request. The process-level
  SPEC supplies defaults; a live set (``POST /_fault``) replaces them; an ``X-Fault``
  request header replaces both for that one request.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "COUNT_KEYS",
    "DURATION_KEYS",
    "FLAG_KEYS",
    "PROCESS_KEYS",
    "REQUEST_KEYS",
    "TERMINAL_KEYS",
    "FaultSpecError",
    "Faults",
    "parse_duration",
    "parse_faults",
]


class FaultSpecError(ValueError):
    """A SPEC string that cannot be parsed; the message names the offending item."""


# key -> kind. Kinds: "duration" (seconds, float), "count" (int >= 0), "flag" (bool),
# "status" (int 100..599), "prob" (float 0..1), "opt_duration" (flag or duration).
_KINDS: dict[str, str] = {
    # process
    "load_delay": "duration",
    "crash_on_load": "opt_duration",
    "never_ready": "flag",
    "bind_fail": "flag",
    "ignore_sigterm": "flag",
    "shutdown_delay": "duration",
    # before headers
    "status": "status",
    "hang": "flag",
    # in the stream
    "ttft": "duration",
    "token_delay": "duration",
    "jitter": "duration",
    "stall_after": "count",
    "close_after": "count",
    "drop_after": "count",
    "reset_after": "count",
    "crash_after": "count",
    "error_after": "count",
    "legacy_error_after": "count",
    "malformed_after": "count",
    "duplicate_after": "count",
    "split_utf8": "flag",
    "crlf": "flag",
    "ping": "duration",
    "p": "prob",
}

PROCESS_KEYS = frozenset(
    {"load_delay", "crash_on_load", "never_ready", "bind_fail", "ignore_sigterm", "shutdown_delay"}
)
REQUEST_KEYS = frozenset(_KINDS) - PROCESS_KEYS
DURATION_KEYS = frozenset(k for k, v in _KINDS.items() if v in ("duration", "opt_duration"))
COUNT_KEYS = frozenset(k for k, v in _KINDS.items() if v == "count")
FLAG_KEYS = frozenset(k for k, v in _KINDS.items() if v in ("flag", "opt_duration"))
# The counts that end a response, in the order they win when several match one event.
TERMINAL_KEYS: tuple[str, ...] = (
    "error_after",
    "legacy_error_after",
    "stall_after",
    "close_after",
    "drop_after",
    "reset_after",
    "crash_after",
)

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*$")


def parse_duration(text: str) -> float:
    """``"500ms"`` -> 0.5, ``"2s"`` -> 2.0, ``"20"`` -> 0.02 (bare number = ms)."""
    m = _DURATION_RE.match(text)
    if not m:
        raise FaultSpecError(f"bad duration {text!r} (use e.g. 500ms, 2s or a bare number of ms)")
    value = float(m.group(1))
    return value if m.group(2) == "s" else value / 1000.0


def _format_duration(seconds: float) -> str:
    ms = seconds * 1000.0
    if abs(ms - round(ms)) < 1e-9:
        return f"{round(ms)}ms"
    return f"{ms:g}ms"


@dataclass(frozen=True)
class Faults:
    """A parsed SPEC. Unset values are None/False; ``keys`` records what was set."""

    # process
    load_delay: float = 0.0
    crash_on_load: float | None = None
    never_ready: bool = False
    bind_fail: bool = False
    ignore_sigterm: bool = False
    shutdown_delay: float = 0.0
    # before headers
    status: int | None = None
    hang: bool = False
    # in the stream
    ttft: float = 0.0
    token_delay: float = 0.0
    jitter: float = 0.0
    stall_after: int | None = None
    close_after: int | None = None
    drop_after: int | None = None
    reset_after: int | None = None
    crash_after: int | None = None
    error_after: int | None = None
    legacy_error_after: int | None = None
    malformed_after: int | None = None
    duplicate_after: int | None = None
    split_utf8: bool = False
    crlf: bool = False
    ping: float | None = None
    p: float = 1.0
    keys: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def empty(self) -> bool:
        """No key was set."""
        return not self.keys

    def terminal_counts(self) -> list[int]:
        """The counts of the terminal faults set here (``TERMINAL_KEYS`` order)."""
        counts = (getattr(self, key) for key in TERMINAL_KEYS)
        return [n for n in counts if n is not None]

    def request_part(self) -> Faults:
        """Only the request faults of this set."""
        return self.only(REQUEST_KEYS)

    def process_part(self) -> Faults:
        """Only the process faults of this set."""
        return self.only(PROCESS_KEYS)

    def only(self, allowed: Iterable[str]) -> Faults:
        """Only the keys in ``allowed``."""
        allowed = frozenset(allowed)
        values = {k: getattr(self, k) for k in self.keys if k in allowed}
        return dataclasses.replace(Faults(), **values, keys=frozenset(values))

    def merged(self, other: Faults) -> Faults:
        """``self`` overridden by every key ``other`` sets."""
        values = {k: getattr(self, k) for k in self.keys}
        values.update({k: getattr(other, k) for k in other.keys})
        return dataclasses.replace(Faults(), **values, keys=frozenset(values))

    def to_spec(self) -> str:
        """The canonical SPEC string (keys in table order); ``parse_faults`` inverts it."""
        items: list[str] = []
        for key, kind in _KINDS.items():
            if key not in self.keys:
                continue
            value = getattr(self, key)
            if kind == "flag":
                items.append(key)
            elif kind == "opt_duration":
                items.append(key if not value else f"{key}={_format_duration(value)}")
            elif kind == "duration":
                items.append(f"{key}={_format_duration(value)}")
            else:
                items.append(f"{key}={value:g}" if kind == "prob" else f"{key}={value}")
        return ",".join(items)

    def __str__(self) -> str:
        return self.to_spec()


def parse_faults(spec: str | Faults | None, *, allowed: Iterable[str] | None = None) -> Faults:
    """Parse a SPEC string. ``allowed`` restricts the keys (others raise FaultSpecError)."""
    if spec is None:
        return Faults()
    if isinstance(spec, Faults):
        return spec
    allowed_set = frozenset(allowed) if allowed is not None else frozenset(_KINDS)
    values: dict[str, object] = {}
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        value = value.strip()
        kind = _KINDS.get(key)
        if kind is None:
            raise FaultSpecError(f"unknown fault {key!r}")
        if key not in allowed_set:
            raise FaultSpecError(f"fault {key!r} is not allowed here")
        try:
            values[key] = _parse_value(key, kind, value if sep else None)
        except ValueError as e:
            raise FaultSpecError(f"fault {key!r}: {e}") from None
    return dataclasses.replace(Faults(), **values, keys=frozenset(values))  # type: ignore[arg-type]


def _parse_value(key: str, kind: str, value: str | None) -> object:
    if kind == "flag":
        if value is None or value.lower() in ("1", "true", "yes", "on"):
            return True
        raise ValueError(f"{key} is a bare flag, got {value!r}")
    if kind == "opt_duration":
        return 0.0 if value is None else parse_duration(value)
    if value is None or value == "":
        raise ValueError("needs a value")
    if kind == "duration":
        return parse_duration(value)
    if kind == "count":
        if not value.isdigit():
            raise ValueError(f"expected a whole number >= 0, got {value!r}")
        return int(value)
    if kind == "status":
        if not value.isdigit() or not 100 <= int(value) <= 599:
            raise ValueError(f"expected an HTTP status 100..599, got {value!r}")
        return int(value)
    if kind == "prob":
        p = float(value)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"expected a probability 0..1, got {value!r}")
        return p
    raise AssertionError(kind)  # pragma: no cover
