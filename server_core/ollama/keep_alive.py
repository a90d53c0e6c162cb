"""Ollama's ``keep_alive``: how long a model stays loaded after this request.

Ollama takes a number of seconds or a Go duration string (``"5m"``, ``"1h30m"``,
``"300ms"``, ``"0"``); a negative value keeps the model loaded, 0 unloads it once the
request has ended. A bare number in a string (``"300"``) is read as seconds too: Ollama's
own ``OLLAMA_KEEP_ALIVE`` setting accepts it, and refusing it would help nobody.
"""

from __future__ import annotations

import math
import re

from server_core.errors import BadRequest

__all__ = ["FOREVER", "capped", "parse_keep_alive"]

FOREVER = -1.0
"""The TTL that means "stay loaded" (the shared context's convention: negative)."""

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")


def _invalid(value: object) -> BadRequest:
    shown = repr(value) if not isinstance(value, str) else f'"{value[:40]}"'
    return BadRequest(
        f"keep_alive {shown} is not a duration: send seconds (300, -1 to keep the model "
        'loaded, 0 to unload it after this request) or a duration such as "5m" or "1h30m".',
        param="keep_alive",
    )


def _go_duration(text: str) -> float | None:
    """Seconds of a Go ``time.ParseDuration`` string, or None when it is not one."""
    sign = -1.0 if text.startswith("-") else 1.0
    rest = text[1:] if text[:1] in "+-" else text
    if rest == "0":
        return 0.0
    if not rest:
        return None
    total, at = 0.0, 0
    while at < len(rest):
        part = _PART.match(rest, at)
        if part is None:
            return None
        total += float(part.group(1)) * _UNITS[part.group(2)]
        at = part.end()
    return sign * total


def parse_keep_alive(value: object) -> float | None:
    """Seconds (``FOREVER`` for any negative), or None when the request sets none."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise _invalid(value)
    if isinstance(value, int | float):
        seconds: float | None = float(value)
    elif isinstance(value, str):
        text = value.strip()
        seconds = float(text) if _NUMBER.fullmatch(text) else _go_duration(text)
    else:
        raise _invalid(value)
    if seconds is None or math.isnan(seconds):
        raise _invalid(value)
    return FOREVER if seconds < 0 or math.isinf(seconds) else seconds


def capped(seconds: float, cap: float | None) -> float:
    """``seconds`` under the server's ``cap`` (None: no cap); "forever" becomes the cap."""
    if cap is None or cap < 0:
        return seconds
    if seconds < 0:
        return cap
    return min(seconds, cap)
