"""llama-server command-line flags: tokenising and merging configuration layers.

A managed server's flags come in layers: the global ``llama_server.args`` (or an
executable variant's args, which replace them), then the alias's
``context_params``. ``merge_flags(*layers)`` combines them the way a person reads
them: a later layer wins per flag.

How a token list is read follows llama.cpp's ``common/arg.cpp`` (checked against
the upstream source):

* each option has several spellings that are **one** flag: ``-c`` / ``--ctx-size``,
  ``-ngl`` / ``--gpu-layers`` / ``--n-gpu-layers``, and also positive / negative
  pairs such as ``--mmap`` / ``--no-mmap`` (``_flag_table.TABLE`` is the table);
* in a ``--long`` flag ``_`` means ``-`` (llama.cpp rewrites it), so
  ``--ctx_size`` is ``--ctx-size``;
* a flag that takes a value always consumes the next token, even one starting
  with ``-`` (``-ngl -1``, ``--temp -0.5``); a few take two values
  (``--lora-scaled FNAME SCALE``);
* llama-server does **not** understand ``--flag=value``; it is accepted here and
  written back as two tokens;
* ``-fa`` / ``--flash-attn`` takes ``on|off|auto`` in current builds and no value
  in older ones, so a following token is its value only when it is not a flag;
* a flag missing from the table (a newer or forked build) takes the next token as
  its value when that token does not look like a flag (a negative number is a
  value, not a flag).

Some options accumulate when repeated (``REPEATABLE_KEYS``: ``--lora``,
``--lora-scaled``, ``--control-vector``, ``--control-vector-scaled``,
``--override-kv``, ``--override-tensor``/``-ot``, ``--override-tensor-draft``/
``-otd``, ``--reverse-prompt``/``-r``, ``--logit-bias``/``-l``,
``--dry-sequence-breaker``, ``--api-key``, ``--api-key-file``, ``--spec-replace``,
``--rpc``). ``--lora`` and ``--lora-scaled`` fill the same adapter list (and so do
the two control-vector flags), so each pair is one repeatable family: the adapter
order, which the ``/lora-adapters`` ids depend on, is kept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from server_core._flag_table import OPTIONAL as _OPTIONAL
from server_core._flag_table import REPEATABLE_TABLE as _REPEATABLE_TABLE
from server_core._flag_table import TABLE as _TABLE

__all__ = [
    "REPEATABLE_KEYS",
    "Flag",
    "FlagError",
    "flag_key",
    "format_flags",
    "has_flag",
    "merge_flags",
    "parse_flags",
]


class FlagError(ValueError):
    """A token list llama-server could not parse (a missing value, a stray word)."""


def _build() -> tuple[dict[str, tuple[str, int]], frozenset[str]]:
    known: dict[str, tuple[str, int]] = {}
    for names, arity in _TABLE:
        key = next(n for n in names if n.startswith("--"))
        for name in names:
            assert name not in known, name
            known[name] = (key, arity)
    repeatable = set()
    for names, arity, key in _REPEATABLE_TABLE:
        repeatable.add(key)
        for name in names:
            assert name not in known, name
            known[name] = (key, arity)
    return known, frozenset(repeatable)


_KNOWN, REPEATABLE_KEYS = _build()
"""``REPEATABLE_KEYS``: keys of the options whose occurrences accumulate."""

_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _looks_like_flag(token: str) -> bool:
    return token.startswith("-") and len(token) > 1 and not _NUMBER.match(token)


def _normalise(name: str) -> str:
    # llama.cpp replaces '_' with '-' in "--" arguments before looking them up.
    return name.replace("_", "-") if name.startswith("--") else name


def flag_key(name: str) -> str:
    """The identity of a flag spelling: ``-c`` and ``--ctx_size`` -> ``--ctx-size``."""
    norm = _normalise(name.split("=", 1)[0] if name.startswith("--") else name)
    known = _KNOWN.get(norm)
    return known[0] if known else norm


@dataclass(frozen=True)
class Flag:
    """One flag occurrence: its key, the spelling used and its values."""

    key: str
    name: str
    values: tuple[str, ...] = ()

    @property
    def repeatable(self) -> bool:
        return self.key in REPEATABLE_KEYS

    def tokens(self) -> list[str]:
        return [self.name, *self.values]


def parse_flags(tokens: Sequence[str]) -> list[Flag]:
    """Split a token list into flags, reading it as llama-server would (see module doc).

    Raises ``FlagError`` for a word that is no flag's value, a flag whose values are
    missing and ``--switch=value`` on a flag that takes no value.
    """
    out: list[Flag] = []
    toks = [str(t) for t in tokens]
    i = 0
    while i < len(toks):
        token = toks[i]
        i += 1
        if not _looks_like_flag(token):
            raise FlagError(f"{token!r} is not a flag (and follows no flag that takes a value)")
        name, inline = token, None
        if token.startswith("--") and "=" in token:
            name, inline = token.split("=", 1)
        known = _KNOWN.get(_normalise(name))
        key = known[0] if known else _normalise(name)
        arity = known[1] if known else _OPTIONAL
        values: list[str] = []
        if inline is not None:
            if arity == 0:
                raise FlagError(f"{name} takes no value (got {token!r})")
            values.append(inline)
        if arity == _OPTIONAL:
            if inline is None and i < len(toks) and not _looks_like_flag(toks[i]):
                values.append(toks[i])
                i += 1
        else:
            while len(values) < arity:
                if i >= len(toks):
                    need = "a value" if arity == 1 else f"{arity} values"
                    raise FlagError(f"{name} needs {need}")
                values.append(toks[i])
                i += 1
        out.append(Flag(key=key, name=name, values=tuple(values)))
    return out


def format_flags(flags: Sequence[Flag]) -> list[str]:
    """Flags back to tokens (``--flag value`` form, never ``--flag=value``)."""
    return [tok for flag in flags for tok in flag.tokens()]


def merge_flags(*layers: Sequence[str]) -> list[str]:
    """Merge token lists; a later layer wins per flag.

    * Order: flags appear in the order of their first appearance in any layer; a
      flag keeps the spelling and value(s) of the last layer that sets it (within
      one layer, of its last occurrence, as llama-server does).
    * Repeatable flags (``REPEATABLE_KEYS``): every occurrence of the last layer that
      sets the flag is kept, in order; earlier layers' occurrences are replaced. So
      ``merge_flags(x, x) == merge_flags(x)``.
    * ``--flag=value`` comes out as ``--flag value``.

    Raises ``FlagError`` (a ``ValueError``) for a layer llama-server could not parse.
    """
    order: list[str] = []
    chosen: dict[str, list[Flag]] = {}
    for layer in layers:
        in_layer: dict[str, list[Flag]] = {}
        for flag in parse_flags(layer):
            if flag.key not in chosen and flag.key not in in_layer:
                order.append(flag.key)
            if flag.repeatable:
                in_layer.setdefault(flag.key, []).append(flag)
            else:
                in_layer[flag.key] = [flag]
        chosen.update(in_layer)
    return format_flags([flag for key in order for flag in chosen[key]])


def has_flag(tokens: Sequence[str], names: Sequence[str] | frozenset[str]) -> bool:
    """True when ``tokens`` sets any flag whose key is one of ``names``' keys."""
    keys = {flag_key(n) for n in names}
    return any(flag.key in keys for flag in parse_flags(tokens))
