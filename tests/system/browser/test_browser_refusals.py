"""A real browser tells WebSocket refusals apart by their close codes (issue 13, item 10).

A refusal before the handshake (HTTP 403 on the upgrade) reaches a page as
close 1006 whatever the reason; the server completes the handshake and closes
with 4401 (identity) or 1008 (origin), which the page does see.
"""

from __future__ import annotations

from importlib import import_module

import pytest
from django.conf import settings

from tests.system.browser.conftest import needs_chromium

pytestmark = [pytest.mark.django_db(transaction=True), needs_chromium]

# Open a WebSocket, ping on open, close after the first answer: what the page saw.
PROBE = """(url) => new Promise((resolve) => {
    const seen = [];
    const ws = new WebSocket(url);
    ws.onopen = () => { seen.push("open"); ws.send(JSON.stringify({ type: "ping" })); };
    ws.onmessage = (m) => { seen.push(JSON.parse(m.data).type); ws.close(1000); };
    ws.onclose = (e) => resolve({ seen, code: e.code });
    setTimeout(() => resolve({ seen, code: "no close within 8 s" }), 8000);
})"""


def ws_url(server) -> str:
    return server.url.replace("http", "ws") + "/ws/reactive/"


def test_the_page_sees_why_its_websocket_was_refused(person, server, make_user):
    alice = make_user("alice")
    anonymous = person(None).open("/login/")
    assert anonymous.evaluate(PROBE, ws_url(server)) == {"seen": ["open"], "code": 4401}

    member = person(alice)
    page = member.open("/login/")
    assert page.evaluate(PROBE, ws_url(server)) == {"seen": ["open", "pong"], "code": 1000}

    # Logged out elsewhere: the cookie names a session that no longer exists.
    cookie = next(c for c in member.context.cookies() if c["name"] == settings.SESSION_COOKIE_NAME)
    import_module(settings.SESSION_ENGINE).SessionStore(cookie["value"]).delete()
    assert page.evaluate(PROBE, ws_url(server)) == {"seen": ["open"], "code": 4401}

    # A page of another origin (Chromium resolves *.localhost to this machine).
    foreign = person(alice).context.new_page()
    foreign.goto(server.url.replace("127.0.0.1", "evil.localhost") + "/login/")  # a 400 page
    assert foreign.evaluate(PROBE, ws_url(server)) == {"seen": ["open"], "code": 1008}


def test_the_client_reports_a_refusal_and_backs_off(person, server):
    page = person(None).open("/login/")
    result = page.evaluate(
        """async () => {
            const { ReactiveClient } = await import("/static/reactive/client.js");
            const client = new ReactiveClient({ transport: "ws", storage: null });
            const seen = [];
            client.on("state", (e) => seen.push(e.state));
            const refused = new Promise((resolve) => {
                let count = 0;
                client.on("refused", (e) => {
                    seen.push(e);
                    if (++count === 2) resolve();
                });
            });
            client.subscribe("toolTypes.getAll", {}, () => {});
            await Promise.race([refused, new Promise((r) => setTimeout(r, 8000))]);
            client.close();
            return seen;
        }"""
    )
    refusals = [e for e in result if isinstance(e, dict)]
    assert refusals[:2] == [{"transport": "ws", "code": 4401, "reason": "unauthenticated"}] * 2
    assert "connected" not in result  # a refusal is a failed connection, not a short success
