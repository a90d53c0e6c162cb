"""The errors the netfault API raises, one per HTTP status the control API maps them to."""

from __future__ import annotations


class NetfaultError(Exception):
    """Base class of the errors the proxy API raises."""


class InvalidToxicError(NetfaultError, ValueError):
    """Bad toxic type, stream, toxicity or attributes (HTTP 400)."""


class ToxicNotFoundError(NetfaultError, LookupError):
    """No toxic with that name (HTTP 404)."""


class DuplicateToxicError(NetfaultError, ValueError):
    """A toxic with that name already exists (HTTP 409)."""
