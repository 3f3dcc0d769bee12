"""Stock middleware run inline under ASGI: sessions, CSRF and security headers still hold."""

from __future__ import annotations

import json

import pytest
from django.test import AsyncClient

from teamhub import middleware

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture(autouse=True)
def inline():
    middleware.install()  # what teamhub.asgi does; AsyncClient runs the async chain


async def test_login_session_is_saved_and_used(alice):
    client = AsyncClient(enforce_csrf_checks=True)
    assert (await client.get("/api/auth/me")).status_code == 401
    token = client.cookies["csrftoken"].value
    login = await client.post(
        "/api/auth/login",
        json.dumps({"username": "alice", "password": "pw-alice"}),
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert login.status_code == 200 and "sessionid" in client.cookies
    me = await client.get("/api/auth/me")
    assert me.status_code == 200 and me.json()["user"]["username"] == "alice"


async def test_csrf_still_enforced(alice):
    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(alice)
    resp = await client.post("/api/auth/logout", "{}", content_type="application/json")
    assert resp.status_code == 403
    assert (await client.get("/api/auth/me")).status_code == 200  # still logged in


async def test_security_headers_present():
    resp = await AsyncClient().get("/api/auth/me")
    assert resp["X-Frame-Options"] == "DENY"
    assert resp["X-Content-Type-Options"] == "nosniff"
    assert resp["Referrer-Policy"] == "same-origin"


async def test_hooks_run_inline(monkeypatch):
    """No thread hop for the stock hooks: sync_to_async is not used by them."""
    from asgiref import sync

    calls = []
    real = sync.SyncToAsync.__init__

    def spy(self, func, *args, **kwargs):
        calls.append(getattr(func, "__qualname__", repr(func)))
        real(self, func, *args, **kwargs)

    monkeypatch.setattr(sync.SyncToAsync, "__init__", spy)
    await AsyncClient().get("/api/auth/me")
    hooks = [c for c in calls if "process_request" in c or "process_response" in c]
    assert hooks == [], hooks
