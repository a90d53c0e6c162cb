"""Which of the client's request headers may travel upstream.

A proxy drops the hop-by-hop headers (they describe the client's connection, not
the request) and the client's credentials, which are for server_core only.
"""

from __future__ import annotations

from twisted.web.http_headers import Headers

__all__ = ["CLIENT_SECRETS", "HOP_BY_HOP", "forwardable_headers"]

# RFC 9110 7.6.1 hop-by-hop headers, plus what a proxy must set itself.
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


def forwardable_headers(client_headers: Headers | None) -> Headers:
    """Client headers minus hop-by-hop ones and the client's own credentials."""
    out = Headers()
    if client_headers is None:
        return out
    connection_tokens: set[bytes] = set()
    for value in client_headers.getRawHeaders(b"connection", []):
        connection_tokens.update(t.strip().lower() for t in value.split(b","))
    for name, values in client_headers.getAllRawHeaders():
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in CLIENT_SECRETS or lname in connection_tokens:
            continue
        out.setRawHeaders(lname, list(values))
    return out
