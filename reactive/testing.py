"""Helpers for projects testing their reactive functions (as Channels ships ``channels.testing``).

Plain functions and context managers, usable from pytest fixtures or Django's
``TestCase``::

    @pytest.fixture(autouse=True)
    def clean_reactive():
        reactive.testing.reset()

    def test_rename_invalidates(agent):
        with reactive.testing.capture_published() as published:
            agent.name = "new"
            agent.save()
        assert any("agency.agent:id=" + str(agent.pk) in tags
                   for batch in published for tags in batch.values())
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from asgiref.sync import async_to_sync
from django.core.cache import caches
from django.core.handlers.wsgi import WSGIRequest
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpResponse, HttpResponseBase
from django.test.client import AsyncClientHandler, ClientHandler

from . import drain, metrics, prefetch, publishing
from .cache import reactive_cache
from .events import Event
from .fastlane import Answer, FastLane
from .functions import Context, ReactiveFunction, Result
from .http import CACHE_HEADER
from .inline import HITS_ONLY
from .log import get_log

__all__ = [
    "capture_published",
    "drain_now",
    "events_after",
    "reset",
    "reset_caches",
    "skip_pending_changes",
    "through_fast_lane",
]

Batch = dict[str | None, set[str]]


def reset(using: str = DEFAULT_DB_ALIAS) -> None:
    """Start from no cached results, no events and no pending changes (needs the database).

    Change rows left by earlier tests are skipped (:func:`skip_pending_changes`).
    """
    reset_caches()
    skip_pending_changes(using)


def reset_caches() -> None:
    """Start from no cached results and no events, without touching the database.

    A process-local cache (locmem) and the in-memory log are emptied. A shared
    cache and log are left alone: other processes of the run (live servers)
    share them, and every test uses fresh ids anyway.
    """
    if drain.is_local():
        caches[reactive_cache().alias].clear()
    if not get_log().SHARED:
        get_log.cache_clear()
    metrics.discard_pending()
    reactive_cache().unbumped.clear()


def skip_pending_changes(using: str = DEFAULT_DB_ALIAS) -> None:
    """Publish (shared cache) or skip (local cache) the change rows written so far."""
    connection = connections[using]
    if not drain.ready(connection):
        return
    if drain.is_local():
        drain.mark_published(connection)
    else:
        drain.drain(using)


def drain_now(using: str = DEFAULT_DB_ALIAS) -> int:
    """Publish the change rows others wrote, as this process's drainer would; how many."""
    return drain.drain(using)


@contextmanager
def capture_published() -> Iterator[list[Batch]]:
    """The change sets published inside the block: one ``{tenant: tags}`` per transaction."""
    seen: list[Batch] = []
    original = publishing.publish

    def spy(*batches: Any) -> bool:
        seen.extend({tenant: set(tags) for tenant, tags in b.items()} for b in batches)
        return original(*batches)

    publishing.publish = spy
    try:
        yield seen
    finally:
        publishing.publish = original


def events_after(cursor: str, *tenants: str) -> list[Event]:
    """The events the log holds after `cursor` (a query's ``cursor``), for `tenants`."""
    return get_log().read(list(tenants), int(cursor))


@contextmanager
def through_fast_lane(lane: FastLane, functions: bool = False) -> Iterator[FastLane]:
    """Django's test clients send each request to `lane` first, as the ASGI server would.

    What the lane answers is the response the test sees; everything else goes
    to Django as usual, and the lane learns from Django's answers (the headers
    it replays). Every hit Django answers is then asked of the lane too, which
    must answer it byte for byte the same (an AssertionError otherwise). Any
    test written against ``Client`` or ``AsyncClient`` thus runs through the
    fast lane unchanged. With `functions`, queries called directly
    (``fn.call``, ``fn.execute``) are answered the lane's way as well
    (:meth:`FastLane.call_cached`). ``lane.answered`` and ``lane.compared``
    count.
    """
    sync_call, async_call = ClientHandler.__call__, AsyncClientHandler.__call__
    function_call = ReactiveFunction.call

    def sync_handler(handler: ClientHandler, environ: dict[str, Any]) -> HttpResponseBase:
        scope = _scope_of(environ)
        answer = async_to_sync(_answer)(lane, scope)
        if answer is not None:
            answered = _response(answer)
            answered.wsgi_request = WSGIRequest(environ)  # type: ignore[attr-defined]
            return answered
        response = sync_call(handler, environ)
        if _learn(lane, scope, response):
            _compare(lane, async_to_sync(_answer)(lane, scope), response)
        return response

    async def async_handler(handler: AsyncClientHandler, scope: dict[str, Any]) -> HttpResponseBase:
        scope = {**scope, "path": _unicode_path(scope["path"])}
        answer = await _answer(lane, scope)
        if answer is not None:
            return _response(answer)
        response = await async_call(handler, scope)
        if _learn(lane, scope, response):
            _compare(lane, await _answer(lane, scope), response)
        return response

    def call(fn: ReactiveFunction, raw_input: Any, ctx: Context) -> Result:
        if ctx.authenticated and not HITS_ONLY.get() and prefetch.PREFETCHED.get() is None:
            found = lane.call_cached(fn, raw_input, ctx)
            if found is not None:
                lane.answered += 1
                return found
        return function_call(fn, raw_input, ctx)

    ClientHandler.__call__ = sync_handler  # type: ignore[method-assign,assignment]
    AsyncClientHandler.__call__ = async_handler  # type: ignore[method-assign,assignment]
    if functions:
        ReactiveFunction.call = call  # type: ignore[method-assign,assignment]
    try:
        yield lane
    finally:
        ClientHandler.__call__ = sync_call  # type: ignore[method-assign]
        AsyncClientHandler.__call__ = async_call  # type: ignore[method-assign]
        ReactiveFunction.call = function_call  # type: ignore[method-assign]


def _compare(lane: FastLane, answer: Answer | None, response: HttpResponseBase) -> None:
    """The lane's answer to a request Django just answered from the cache must be Django's."""
    if answer is None:
        return
    lane.compared += 1
    theirs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.items()]
    body = getattr(response, "content", b"")
    assert (answer.status, answer.headers, answer.body) == (response.status_code, theirs, body), (
        "the fast lane answered a hit otherwise than Django"
    )


async def _answer(lane: FastLane, scope: dict[str, Any]) -> Answer | None:
    call = lane.eligible(scope)
    if call is None:
        return None
    try:
        return await lane.answer(call)
    finally:
        await prefetch.aclose()  # each test's event loop closes with the test


def _unicode_path(path: str) -> str:
    # The test clients spell the path WSGI's way (UTF-8 bytes as latin-1); ASGI's is text.
    try:
        return path.encode("latin-1").decode()
    except UnicodeError:
        return path


def _scope_of(environ: dict[str, Any]) -> dict[str, Any]:
    """The ASGI scope of a test client's WSGI environ."""
    headers = [
        (
            name.removeprefix("HTTP_").replace("_", "-").lower().encode(),
            str(value).encode("latin-1"),
        )
        for name, value in environ.items()
        if name.startswith("HTTP_") or name in ("CONTENT_TYPE", "CONTENT_LENGTH")
    ]
    return {
        "type": "http",
        "scheme": environ.get("wsgi.url_scheme", "http"),
        "method": environ["REQUEST_METHOD"],
        "path": _unicode_path(environ["PATH_INFO"]),
        "query_string": environ.get("QUERY_STRING", "").encode("latin-1"),
        "headers": headers,
    }


def _response(answer: Answer) -> HttpResponse:
    response = HttpResponse(answer.body, status=answer.status)
    del response["Content-Type"]
    for name, value in answer.headers:
        response[name.decode("latin-1")] = value.decode("latin-1")
    return response


def _learn(lane: FastLane, scope: dict[str, Any], response: HttpResponseBase) -> bool:
    """Let the lane learn from Django's answer; whether it was a hit to compare the lane with."""
    call = lane.eligible(scope)
    if call is None:
        return False
    sent = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.items()]
    sent += [
        (b"Set-Cookie", c.output(header="").encode().strip()) for c in response.cookies.values()
    ]
    lane.learn(call, response.status_code, sent)
    hit = response.get(CACHE_HEADER) == "hit" and response.status_code in (200, 304)
    return hit and not response.cookies
