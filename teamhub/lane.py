"""TeamHub's fast lane: which GET routes are queries, and how a caller is identified."""

import os
from typing import Any

from agency.auth import TokenIdentity
from agency.routes import fast_routes
from reactive import FastLane, Route, SessionIdentity


def build(app: Any) -> FastLane:
    """The fast lane around `app` (off with ``TEAMHUB_FAST_LANE=0``, for comparisons)."""
    return FastLane(
        app,
        routes=[Route("/api/rx/{function}"), *fast_routes("/api/")],
        # A Bearer token first: ApiTokenMiddleware lets it override a session.
        identities=[TokenIdentity(), SessionIdentity()],
        enabled=os.environ.get("TEAMHUB_FAST_LANE", "1") != "0",
    )
