"""Browser tests: real headless Chromium (Debian's ``chromium``) driven by Playwright.

A live ASGI server (tests/live.py) shares the test database; people log in by
a session cookie made here (the server process hashes passwords with the
slow default hasher, the test process with a fast one), or through the login
page with a password hashed the server's way.

Skipped, with the reason, only when /usr/bin/chromium is absent
(``apt-get install chromium``); Playwright's own browser downloads are not used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from importlib import import_module

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

from agency.models import ApiToken, User
from tests.live import LiveServer
from tests.system.browser.chromium import CHROMIUM, CHROMIUM_ARGS

WAIT_MS = 10_000  # the bound of waits that are not themselves the assertion


needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("browser"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(server) -> Iterator:
    """Chromium for the module's tests (after the server, which must not inherit the flag below).

    Playwright's sync API keeps an event loop running in this thread, so Django
    would refuse the tests' ORM calls (and the database flush between them) as
    "async": they are synchronous, so say so while the browser is open.
    """
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def session_cookie(user: User, url: str) -> dict:
    """A logged-in session for `user`, as a cookie for the browser."""
    engine = import_module(settings.SESSION_ENGINE)
    session = engine.SessionStore()
    session[SESSION_KEY] = user._meta.pk.value_to_string(user)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return {"name": settings.SESSION_COOKIE_NAME, "value": session.session_key, "url": url}


class Person:
    """One person's browser context (logged in) and the pages open in it."""

    def __init__(self, browser, server: LiveServer, user: User | None):
        self.server = server
        self.user = user
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.set_default_timeout(WAIT_MS)
        self.errors: list[str] = []
        if user is not None:
            self.context.add_cookies([session_cookie(user, server.url)])

    def open(self, path: str, *, block_websocket: bool = False):
        """A new tab at `path`; with `block_websocket`, WebSocket fails as behind some proxies."""
        page = self.context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        if block_websocket:
            page.add_init_script(
                "window.WebSocket = class { constructor() { throw new Error('blocked'); } };"
            )
        page.goto(self.server.url + path)
        return page

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def person(browser, server) -> Iterator[Callable[[User | None], Person]]:
    """`person(user)`: a fresh browser context logged in as `user` (closed after the test)."""
    people: list[Person] = []

    def make(user: User | None) -> Person:
        people.append(Person(browser, server, user))
        return people[-1]

    yield make
    for p in people:
        assert not p.errors, f"JavaScript errors in the page: {p.errors}"
        p.close()


@pytest.fixture
def api_as(server) -> Iterator[Callable[[User], httpx.Client]]:
    """`api_as(user)`: an HTTP client of the live server with an API token of `user`."""
    clients: list[httpx.Client] = []

    def make(user: User) -> httpx.Client:
        token = ApiToken.issue(user, "browser tests")[1]
        clients.append(
            httpx.Client(
                base_url=server.url, timeout=10, headers={"Authorization": f"Bearer {token}"}
            )
        )
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def rx(client: httpx.Client, name: str, body: dict) -> dict:
    """Call a reactive function on the live server; its data."""
    response = client.post(f"/api/rx/{name}", json=body)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def wait_connected(page, transport: str | None = None) -> None:
    """Until the page's client is connected (over `transport`, if given)."""
    condition = "document.documentElement.dataset.rxState === 'connected'"
    if transport:
        condition += f" && document.documentElement.dataset.rxTransport === '{transport}'"
    page.wait_for_function(condition, timeout=WAIT_MS)
