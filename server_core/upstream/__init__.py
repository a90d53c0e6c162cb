"""HTTP client side: requests to llama-server and remote APIs, and reading their bodies.

``client`` (UpstreamClient: retry, timeouts), ``_pool`` (pool and endpoints),
``headers`` (what may be forwarded), ``_failures`` (Agent failures as UpstreamError),
``body`` (the whole-body reader), ``settings`` (UpstreamSettings).
"""

from server_core.config.settings import UpstreamSettings
from server_core.upstream._pool import set_nodelay
from server_core.upstream.body import BodyIncomplete, abort_body_transport, read_complete_body
from server_core.upstream.client import UpstreamClient
from server_core.upstream.headers import HOP_BY_HOP, forwardable_headers

__all__ = [
    "HOP_BY_HOP",
    "BodyIncomplete",
    "UpstreamClient",
    "UpstreamSettings",
    "abort_body_transport",
    "forwardable_headers",
    "read_complete_body",
    "set_nodelay",
]
