"""Which client headers travel upstream."""

from __future__ import annotations

from twisted.web.http_headers import Headers

from server_core.upstream import forwardable_headers


def test_forwardable_headers_drop_credentials_and_hop_by_hop() -> None:
    incoming = Headers(
        {
            b"authorization": [b"Bearer client-secret"],
            b"x-api-key": [b"k"],
            b"cookie": [b"c=1"],
            b"connection": [b"keep-alive, x-custom-hop"],
            b"x-custom-hop": [b"1"],
            b"transfer-encoding": [b"chunked"],
            b"host": [b"example"],
            b"content-length": [b"5"],
            b"x-fault": [b"ttft=1ms"],
            b"user-agent": [b"sdk"],
        }
    )
    out = forwardable_headers(incoming)
    names = {name.lower() for name, _ in out.getAllRawHeaders()}
    assert names == {b"x-fault", b"user-agent"}


def test_no_client_headers_forward_nothing() -> None:
    assert list(forwardable_headers(None).getAllRawHeaders()) == []
