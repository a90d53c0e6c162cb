"""The HTTP layer: the guarded site, the routes, the drain, the listener.

Handlers validate and delegate to ``IRouterState``; nothing here reads upstream bodies or
touches processes.
"""

from server_core.web.drain import DrainService, InFlight, shutting_down
from server_core.web.listener import Listener
from server_core.web.openai_routes import OpenAIRoutes
from server_core.web.site import HEADER_TIMEOUT, GuardedChannel, GuardedRequest, GuardedSite

__all__ = [
    "HEADER_TIMEOUT",
    "DrainService",
    "GuardedChannel",
    "GuardedRequest",
    "GuardedSite",
    "InFlight",
    "Listener",
    "OpenAIRoutes",
    "shutting_down",
]
