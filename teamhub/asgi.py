"""ASGI entry point: HTTP (Django) and WebSocket (Channels) routing."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "teamhub.settings")
django_asgi = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from teamhub import lane, middleware  # noqa: E402

middleware.install()

from agency.auth import WebSocketTokenAuth  # noqa: E402
from reactive import Lifespan, websocket_application  # noqa: E402

# Lifespan: the server starts this process's drainer, which publishes writes
# made outside it (other processes, raw SQL from other services).
application = Lifespan(
    ProtocolTypeRouter(
        {
            # Query hits answered before Django (docs/operations.md, "The fast lane"),
            # and 413 before Django spools an oversized body to disk (see BodyLimit).
            "http": lane.build(middleware.BodyLimit(django_asgi)),
            "websocket": websocket_application(WebSocketTokenAuth),
        }
    )
)
