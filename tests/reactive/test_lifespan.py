"""The ASGI lifespan (reactive/lifespan.py): the drainer runs from startup to shutdown.

The refusal to start on a failed check is in tests/reactive/test_conf_checks.py.
"""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from reactive import drainer, fanout
from reactive.fanout import get_hub
from reactive.lifespan import Lifespan

WAIT = 10  # seconds any wait of these tests may take at most


class Server:
    """An ASGI server's side of the lifespan protocol: messages in, messages out."""

    def __init__(self, app: Lifespan) -> None:
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict] = asyncio.Queue()
        self.task = asyncio.create_task(app({"type": "lifespan"}, self.inbox.get, self.outbox.put))

    async def say(self, message_type: str) -> dict:
        await self.inbox.put({"type": message_type})
        return await asyncio.wait_for(self.outbox.get(), WAIT)


@pytest.fixture
def no_drainer_yet(monkeypatch):
    """This process's drainer and shutdown flag, as a fresh server process has them."""
    monkeypatch.setattr(drainer, "_drainer", None)
    monkeypatch.setattr(fanout, "_stopping", False)  # shutdown() sets it for the process


@pytest.mark.django_db(transaction=True)
async def test_startup_starts_the_drainer_and_shutdown_stops_it(no_drainer_yet):
    server = Server(Lifespan(app=None))
    assert await server.say("lifespan.startup") == {"type": "lifespan.startup.complete"}
    running = drainer._drainer
    assert running is not None and running.is_alive()
    stream = await get_hub().open({"tenant-lifespan"})
    assert await server.say("lifespan.shutdown") == {"type": "lifespan.shutdown.complete"}
    await asyncio.wait_for(server.task, WAIT)  # the lifespan call returns after shutdown
    assert drainer._drainer is None and not running.is_alive()
    assert stream.ended  # open streams were told to end
    await sync_to_async(connections.close_all)()


async def test_other_scopes_go_to_the_wrapped_app():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope)
        await send({"type": "http.response.start", "status": 204})

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": "/"}
    await Lifespan(app)(scope, None, send)
    assert seen == [scope] and sent == [{"type": "http.response.start", "status": 204}]
