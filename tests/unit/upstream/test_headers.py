"""Which client headers travel upstream: an allowlist, stricter beside the operator's key."""

from __future__ import annotations

from twisted.web.http_headers import Headers

from server_core.upstream import forwardable_headers

INCOMING = Headers(
    {
        b"authorization": [b"Bearer client-secret"],
        b"x-api-key": [b"k"],
        b"cookie": [b"c=1"],
        b"connection": [b"keep-alive, x-request-id"],
        b"transfer-encoding": [b"chunked"],
        b"host": [b"example"],
        b"content-length": [b"5"],
        b"content-encoding": [b"gzip"],
        b"openai-organization": [b"org-someone-else"],
        b"openai-project": [b"proj-someone-else"],
        b"x-stainless-arch": [b"x64"],
        b"x-fault": [b"ttft=1ms"],
        b"user-agent": [b"sdk"],
        b"accept": [b"text/event-stream"],
    }
)


def names(headers: Headers) -> set[bytes]:
    return {name.lower() for name, _ in headers.getAllRawHeaders()}


def test_a_llama_server_gets_only_the_allowlist_and_the_fault_header() -> None:
    # x-request-id is on the list but the client named it hop-by-hop in Connection.
    assert names(forwardable_headers(INCOMING)) == {b"x-fault", b"user-agent", b"accept"}


def test_an_upstream_with_the_operators_key_gets_no_organization_project_or_fault() -> None:
    out = forwardable_headers(INCOMING, with_operator_key=True)
    assert names(out) == {b"user-agent", b"accept"}
    assert out.getRawHeaders(b"accept") == [b"text/event-stream"]


def test_no_client_headers_forward_nothing() -> None:
    assert list(forwardable_headers(None).getAllRawHeaders()) == []


def test_the_test_only_header_stays_away_from_remote_apis() -> None:
    incoming = Headers({b"x-fault": [b"ttft=1ms"], b"user-agent": [b"sdk"]})
    assert forwardable_headers(incoming).hasHeader(b"x-fault")
    strict = forwardable_headers(incoming, with_operator_key=True)
    assert not strict.hasHeader(b"x-fault") and strict.hasHeader(b"user-agent")
