"""Which of the client's request headers may travel upstream: an allowlist.

server_core builds each upstream request itself (its own JSON body, its own framing,
the upstream's own key), so almost nothing of the client's request is the upstream's
business. A denylist let through whatever it did not foresee: ``OpenAI-Organization``
and ``OpenAI-Project`` (which bill another account beside the operator's key),
``Content-Encoding`` (describing a body that is re-serialised anyway). Only the names
below travel. ``X-Fault`` (the fake llama-server's fault injection, see ``harness``)
travels only to upstreams that get no key of the operator's: a managed or external
llama-server, never an API the operator pays for.
"""

from __future__ import annotations

from twisted.web.http_headers import Headers

__all__ = ["CLIENT_SECRETS", "FORWARDED", "HOP_BY_HOP", "TEST_ONLY", "forwardable_headers"]

# RFC 9110 7.6.1 hop-by-hop headers, plus what a proxy must set itself. Never forwarded
# (the allowlist already leaves them out; kept as the public record of why).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"accept-encoding",
    }
)
# Credentials of the client are for server_core, never for the upstream.
CLIENT_SECRETS = frozenset({b"authorization", b"x-api-key", b"cookie", b"api-key"})
# What any upstream may see: the media types the client reads, who it is, its trace id.
FORWARDED = frozenset({b"accept", b"user-agent", b"x-request-id"})
# What only an upstream without the operator's key may see.
TEST_ONLY = frozenset({b"x-fault"})


def forwardable_headers(
    client_headers: Headers | None, *, with_operator_key: bool = False
) -> Headers:
    """The client's headers that are on the allowlist (``FORWARDED``, plus ``TEST_ONLY``
    unless the request carries the operator's key), minus any the client itself named
    hop-by-hop in ``Connection``."""
    out = Headers()
    if client_headers is None:
        return out
    allowed = FORWARDED if with_operator_key else FORWARDED | TEST_ONLY
    connection_tokens: set[bytes] = set()
    for value in client_headers.getRawHeaders(b"connection", []):
        connection_tokens.update(t.strip().lower() for t in value.split(b","))
    for name, values in client_headers.getAllRawHeaders():
        lname = name.lower()
        if lname in allowed and lname not in connection_tokens:
            out.setRawHeaders(lname, list(values))
    return out
