"""The WebSocket application (reactive/routing.py): a foreign Origin is refused with 1008.

docs/protocol.md: 1008 tells a browser "a deployment error, retrying does not
help", unlike 1006; so the handshake completes before the close.
"""

from __future__ import annotations

import asyncio

import pytest
from channels.testing import WebsocketCommunicator

from reactive.consumers import CLOSE_POLICY, RAW_SEND
from reactive.routing import OriginCheck, websocket_application

WAIT = 5  # seconds any wait of these tests may take at most


class Recorder:
    """A wrapped app that notes the scopes it was handed."""

    def __init__(self) -> None:
        self.scopes: list[dict] = []

    async def __call__(self, scope, receive, send):
        self.scopes.append(scope)


def ws_scope(origin: str | None) -> dict:
    headers = [(b"host", b"testserver")]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {"type": "websocket", "path": "/ws/reactive/", "headers": headers}


async def run(app, scope, first_message: dict) -> list[dict]:
    sent: list[dict] = []
    messages = asyncio.Queue()
    await messages.put(first_message)

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(app(scope, messages.get, send), WAIT)
    return sent


CONNECT = {"type": "websocket.connect"}


async def test_a_foreign_origin_is_accepted_then_closed_with_1008():
    inner = Recorder()
    sent = await run(OriginCheck(inner), ws_scope("https://evil.example"), CONNECT)
    assert sent == [{"type": "websocket.accept"}, {"type": "websocket.close", "code": CLOSE_POLICY}]
    assert CLOSE_POLICY == 1008 and inner.scopes == []


async def test_a_client_gone_before_connecting_is_sent_nothing():
    inner = Recorder()
    disconnect = {"type": "websocket.disconnect", "code": 1001}
    assert await run(OriginCheck(inner), ws_scope("https://evil.example"), disconnect) == []
    assert inner.scopes == []


@pytest.mark.parametrize("origin", ["http://testserver", "http://localhost:8000", None])
async def test_an_allowed_or_absent_origin_reaches_the_app_with_the_raw_send(origin):
    inner = Recorder()
    await run(OriginCheck(inner), ws_scope(origin), CONNECT)
    (scope,) = inner.scopes
    assert scope["path"] == "/ws/reactive/" and callable(scope[RAW_SEND])


def test_trusted_origins_and_allowed_hosts(settings):
    settings.ALLOWED_HOSTS = [".example.org"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.partner.test/"]
    assert OriginCheck.allowed("https://app.partner.test")  # a trusted origin, slash or not
    assert OriginCheck.allowed("https://sub.example.org:8443")
    assert not OriginCheck.allowed("https://example.org.evil.test")
    assert not OriginCheck.allowed("http://[bad")  # not a URL at all
    assert not OriginCheck.allowed("null")  # a sandboxed page names no host


def test_debug_without_allowed_hosts_allows_only_local_origins(settings):
    settings.ALLOWED_HOSTS, settings.DEBUG = [], True
    assert OriginCheck.allowed("http://localhost:3000")
    assert OriginCheck.allowed("http://127.0.0.1:8000")
    assert not OriginCheck.allowed("http://192.168.1.5")
    settings.DEBUG = False
    assert not OriginCheck.allowed("http://localhost:3000")


async def test_the_whole_websocket_application_refuses_a_foreign_origin():
    communicator = WebsocketCommunicator(
        websocket_application(), "/ws/reactive/", headers=[(b"origin", b"https://evil.example")]
    )
    connected, _ = await communicator.connect(timeout=WAIT)
    assert connected  # accepted, so that the browser sees the close code ...
    assert await communicator.receive_output(WAIT) == {"type": "websocket.close", "code": 1008}
    await communicator.wait(WAIT)
