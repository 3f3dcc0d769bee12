"""The ASGI lifespan of a server process: checks, the drainer, and a clean shutdown."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.core.checks import run_checks

from .checks import TAG
from .drainer import start_drainer, stop_drainer
from .fanout import close_hub, shutdown
from .types import ASGIApp, Receive, Scope, Send

__all__ = ["Lifespan"]


class Lifespan:
    """ASGI wrapper: starts the drainer when the server starts, stops it at shutdown.

    Servers that send ASGI lifespan events (uvicorn, hypercorn) need nothing
    else; under one that does not (daphne), call :func:`start_drainer` in the
    ASGI module. Other scopes go to `app` unchanged. At start-up it runs the
    system checks of :mod:`reactive.checks`, and refuses to start on an error.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer lifespan messages; hand every other scope to the wrapped app."""
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                errors = [m for m in await sync_to_async(run_checks)(tags=[TAG]) if m.is_serious()]
                if errors:  # refuse to serve rather than serve stale data
                    failure = "\n".join(str(e) for e in errors)
                    await send({"type": "lifespan.startup.failed", "message": failure})
                    return
                start_drainer()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                shutdown()  # open streams end (when the server did not end them already)
                await close_hub()
                await sync_to_async(stop_drainer, thread_sensitive=False)()
                await send({"type": "lifespan.shutdown.complete"})
                return
