"""Host names and web origins, read the same way from the configuration and from requests.

``server.allowed_hosts`` and ``server.cors_origins`` (the browser defences of
``server_core.web.browser_guard``) hold values that requests carry too: a ``Host`` header
is split by ``split_host`` whether it comes from the file or from the wire, and an origin
is normalised by ``normalize_origin`` the way a browser serialises its ``Origin`` header,
so a comparison is a plain string match. The two ``*_entries`` checks turn a bad entry
into a FILE:LINE error at load time.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from typing import TYPE_CHECKING

from yaml.nodes import Node

if TYPE_CHECKING:
    from server_core.config._values import ConfigReader

__all__ = [
    "ANY_HOST",
    "allowed_host_entries",
    "cors_origin_entries",
    "is_ip_literal",
    "normalize_origin",
    "split_host",
]

ANY_HOST = "*"
"""The ``allowed_hosts`` entry that turns the Host check off."""

_LABEL = r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?"
_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def split_host(value: str) -> tuple[str, int | None] | None:
    """``name[:port]``, ``a.b.c.d[:port]`` or ``[v6][:port]`` as (lowercase host, port).

    None when ``value`` is not a host a client could send (the brackets of an IPv6
    address are kept: ``[::1]`` is how it appears in a ``Host`` header). A trailing dot
    (``localhost.``) names the same host and is dropped.
    """
    text = value.strip().lower()
    port: int | None = None
    if text.startswith("["):
        host, sep, rest = text.partition("]")
        host += sep
        if not sep or not _ipv6(host[1:-1]):
            return None
        if rest:
            if not rest.startswith(":"):
                return None
            port = _port(rest[1:])
            if port is None:
                return None
        return host, port
    if text.count(":") == 1:
        text, raw_port = text.split(":")
        port = _port(raw_port)
        if port is None:
            return None
    text = text.removesuffix(".")
    if not _NAME.match(text):
        return None
    return text, port


def is_ip_literal(host: str) -> bool:
    """``host`` (as ``split_host`` returns it) is an IPv4 or bracketed IPv6 address."""
    if host.startswith("[") and host.endswith("]"):
        return _ipv6(host[1:-1])
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def normalize_origin(value: str) -> str | None:
    """``scheme://host[:port]`` as a browser sends it in ``Origin``, or None if not one.

    Lowercase, no default port, no path: ``HTTP://App.example:443/`` and
    ``https://app.example`` are the same origin only once normalised, and the browser
    always sends the second form.
    """
    text = value.strip()
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or "@" in parts.netloc:
        return None
    host = split_host(parts.netloc)
    if host is None:
        return None
    name, port = host
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{name}"
    return f"{scheme}://{name}:{port}"


def allowed_host_entries(reader: ConfigReader, node: Node, path: str) -> tuple[str, ...]:
    """``server.allowed_hosts``: host names (``name``, ``name:port``, ``[v6]``) or ``*``."""
    entries = []
    for i, item in enumerate(reader.sequence(node, path)):
        where = f"{path}[{i}]"
        text = reader.string(item, where).strip()
        if text == ANY_HOST:
            entries.append(ANY_HOST)
            continue
        host = split_host(text)
        if host is None or "/" in text:
            reader.fail(
                f"{where}: expected a host name as clients write it in the URL, like "
                f"'myhost.lan', 'myhost.lan:1135', '192.168.1.5' or '[fe80::1]', got {text!r}",
                item,
            )
        name, port = host
        entries.append(name if port is None else f"{name}:{port}")
    return tuple(entries)


def cors_origin_entries(reader: ConfigReader, node: Node, path: str) -> tuple[str, ...]:
    """``server.cors_origins``: web origins like ``http://localhost:3000``."""
    entries = []
    for i, item in enumerate(reader.sequence(node, path)):
        where = f"{path}[{i}]"
        text = reader.string(item, where)
        origin = normalize_origin(text)
        if origin is None:
            reader.fail(
                f"{where}: expected a web origin (scheme://host[:port], no path), like "
                f"'http://localhost:3000' or 'https://app.example', got {text.strip()!r}",
                item,
            )
        entries.append(origin)
    return tuple(entries)


def _port(text: str) -> int | None:
    if not text.isdigit() or len(text) > 5:
        return None
    port = int(text)
    return port if 0 < port < 65536 else None


def _ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True
