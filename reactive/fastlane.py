"""The fast lane: query hits answered before Django's request cycle, byte for byte as Django would.

Mount it around Django's ASGI application::

    application = FastLane(get_asgi_application(), routes=[Route("/api/rx/{function}")],
                           identities=[SessionIdentity()])

For a ``GET`` of a route naming a query it runs, on the event loop, the same
code a Django request runs: the identity lookup (an :class:`IdentityResolver`:
a Bearer token, a session cookie), input validation, the function's ``access``
check and its cached lookup with the entry's tag versions, every cache read
answered from **one** fetch made beforehand (``reactive.prefetch``: the keys a
request of the same shape read last time, one MGET). When all of it hits, it
answers with the cached bytes and the headers Django sent for the same hit
(``reactive.replay``), and ``304`` when ``If-None-Match`` names the entry's
ETag. Anything else (a miss, an error, a refused caller, an input that does
not validate, a cache that failed or awaits repair, a response shape not
learned yet) goes to Django unchanged, which answers it as it always does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import SynchronousOnlyOperation
from django.db import transaction
from django.http import QueryDict
from django.utils.datastructures import CaseInsensitiveMapping
from django.utils.functional import cached_property

from . import prefetch
from .cache import reactive_cache
from .functions import Context, ReactiveFunction, Result, registry
from .http import CACHE_HEADER, etag_matches, query_input, result_body
from .identity import Identity, IdentityResolver
from .inline import HITS_ONLY, CacheMiss
from .replay import HeaderList, Templates, templates
from .types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("reactive")

MAX_ROUNDS = 8  # fetches per request: a shape seen before needs one
MAX_SHAPES = 20_000  # request shapes whose keys are remembered (an LRU)
# A caller's identity is reused while every cache value it was computed from is unchanged,
# for at most this long: what a resolver does by the clock (a token's last-used time) is
# then done at least that often.
IDENTITY_SECONDS = 1.0
_ABSENT = object()
_NAME = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Route:
    """A ``GET`` path answered by a query.

    ``{function}`` in the path names the query (``/api/rx/{function}``: any
    registered query); otherwise `function` does. Other placeholders fill the
    input (``/api/agents/{id}``); with none, the input is the query string.
    `envelope`: answer ``{data, key, tags, cursor}`` (the ``/rx`` routes) or
    the data alone (REST routes).
    """

    path: str
    function: str | None = None
    envelope: bool = True

    def pattern(self) -> re.Pattern[str]:
        """The path as a regular expression with one named group per placeholder."""
        parts = _NAME.split(self.path)
        out = ""
        for i, part in enumerate(parts):
            out += f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part)
        return re.compile(out + r"\Z")


@dataclass
class Answer:
    """A response the lane sends."""

    status: int
    headers: HeaderList
    body: bytes


class _Outcome:
    def __init__(self, name: str):
        self.name = name


DECLINE = _Outcome("decline")  # Django answers
IDENTITY_MISS = _Outcome("identity miss")  # the identity lookup needs keys or a thread
FUNCTION_MISS = _Outcome("function miss")  # the function needs keys (or Django)
NEED_BODY = _Outcome("need body")  # the entry was read for its ETag, which did not match


class _Request:
    """What access checks and ``query_input`` read of a request, built from the ASGI scope."""

    method = "GET"

    def __init__(self, path: str, query: str, headers: CaseInsensitiveMapping[str], user: Any):
        self.path = self.path_info = path
        self.query = query
        self.headers = headers
        self.user = user

    @cached_property
    def GET(self) -> QueryDict:  # noqa: N802 (Django's name)
        """The query string as Django parses it."""
        return QueryDict(self.query)


@dataclass
class Call:
    """A request the lane may answer: its route, function, credential and headers."""

    route: Route
    fn: ReactiveFunction
    params: dict[str, str]  # the route's placeholders
    path: str
    query: str
    headers: CaseInsensitiveMapping[str]
    resolver: IdentityResolver
    credential: str

    scheme: str = "http"

    @cached_property
    def route_id(self) -> str:
        """What the learned headers are kept under, with the identity kind and status.

        The host and scheme are part of it: Django refuses a host not in
        ``ALLOWED_HOSTS`` and may redirect plain HTTP, so a hit learned for
        one host and scheme says nothing of another.
        """
        forwarded = settings.SECURE_PROXY_SSL_HEADER
        proto = (
            self.headers.get(forwarded[0].removeprefix("HTTP_").replace("_", "-"), "")
            if forwarded
            else ""
        )
        host = self.headers.get("host", "")
        return f"{self.route.path}|{self.fn.name}|{self.scheme}|{proto}|{host}"

    @cached_property
    def shapes(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The request's shape, and its caller's.

        Requests of one shape (path, query and credential, hashed) read the
        same keys; requests of one caller share at least the identity's.
        """
        secret = hashlib.blake2b(self.credential.encode(), digest_size=16).hexdigest()
        return (self.path, self.query, self.resolver.kind, secret), (self.resolver.kind, secret)

    def request(self, identity: Identity) -> _Request:
        """The request the function's code sees, as Django's view would."""
        request = _Request(self.path, self.query, self.headers, identity.user)
        for name, value in identity.attributes.items():
            setattr(request, name, value)
        return request


@dataclass
class _Known:
    """An identity, and what each cache key its resolver read held (reused while unchanged)."""

    at: float
    values: dict[str, Any]
    identity: Identity

    def still(self, fetched: prefetch.Prefetch) -> bool:
        return time.monotonic() - self.at < IDENTITY_SECONDS and all(
            key in fetched.asked and fetched.got.get(key, _ABSENT) == value
            for key, value in self.values.items()
        )


class FastLane:
    """An ASGI application answering query hits itself and passing everything else on."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[Route],
        identities: Sequence[IdentityResolver],
        enabled: bool = True,
    ):
        self.app = app
        self.routes = [(route, route.pattern()) for route in routes]
        self.identities = list(identities)
        self.enabled = enabled
        self.templates: Templates = templates
        self.shapes: OrderedDict[tuple[str, ...], list[str]] = OrderedDict()
        self.results: OrderedDict[tuple[str, ...], str] = OrderedDict()  # shape -> entry key
        self.known: OrderedDict[tuple[str, ...], _Known] = OrderedDict()  # by caller
        self.inputs: OrderedDict[tuple[str, str], Any] = OrderedDict()  # parsed query strings
        self.answered = 0  # requests the lane answered itself (tests read it)
        self.compared = 0  # Django's answers it was checked against (reactive.testing)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a hit here; hand everything else to the wrapped application."""
        if scope["type"] == "http" and self.enabled:
            call = self.eligible(scope)
            answer = None
            if call is not None:
                try:
                    answer = await self.answer(call)
                except Exception:  # a bug here must not cost the request: Django answers it
                    logger.exception("reactive: the fast lane failed; Django answers")
            if answer is not None:
                start = {"type": "http.response.start", "status": answer.status}
                await send({**start, "headers": answer.headers})
                await send({"type": "http.response.body", "body": answer.body})
                return
            if call is not None:
                send = self._learning(send, call)
        await self.app(scope, receive, send)

    # -- which requests ----------------------------------------------------------------------

    def eligible(self, scope: Scope) -> Call | None:
        """The request as a :class:`Call` when the lane may answer it, else None."""
        if not self.enabled or scope.get("method") != "GET" or scope.get("root_path"):
            return None
        routed = self._route(scope["path"])
        headers = _headers(scope) if routed is not None else None
        if routed is None or headers is None:
            return None
        credential = self._credential(headers)
        query = scope.get("query_string", b"")
        try:
            query = query.decode() if isinstance(query, bytes) else query  # as ASGIRequest reads it
        except UnicodeDecodeError:
            return None
        if credential is None:
            return None
        scheme = scope.get("scheme") or "http"
        return Call(*routed, scope["path"], query, headers, *credential, scheme=scheme)

    def _route(self, path: str) -> tuple[Route, ReactiveFunction, dict[str, str]] | None:
        for route, pattern in self.routes:
            match = pattern.match(path)
            if match is None:
                continue
            params = match.groupdict()
            name = params.pop("function", None) or route.function
            fn = registry.get(name or "")
            if fn is None or fn.kind != "query":
                return None
            return route, fn, params
        return None

    def _credential(
        self, headers: CaseInsensitiveMapping[str]
    ) -> tuple[IdentityResolver, str] | None:
        for resolver in self.identities:
            credential = resolver.credential(headers)
            if credential is not None:
                return resolver, credential
        return None

    # -- answering ---------------------------------------------------------------------------

    async def answer(self, call: Call) -> Answer | None:
        """The lane's own answer to the request, or None: Django must answer it."""
        cache = reactive_cache()
        if not cache.trusted() or not prefetch.supports(cache.backend):
            return None
        fetched = prefetch.Prefetch()
        shape, caller = call.shapes
        # Never seen: start from this caller's last request (its identity's keys, at least).
        keys = self.shapes.get(shape) or self.shapes.get(caller, [])
        try:
            return await self._rounds(call, fetched, keys)
        finally:
            asked = sorted(fetched.asked)
            self._remember(shape, asked)
            self._remember(caller, asked)

    async def _rounds(
        self, call: Call, fetched: prefetch.Prefetch, keys: list[str]
    ) -> Answer | None:
        """Fetch, attempt, fetch what the attempt wanted, ...: one round for a shape seen before."""
        cache = reactive_cache()
        computed = False
        # Revalidation: the result's own entry is read for its header (its ETag) alone.
        entry = self.results.get(call.shapes[0])
        conditional = (
            call.headers.get("if-none-match") and call.fn.check is None
        )  # checks read data
        heads = {entry} if entry and conditional else set()
        for _ in range(MAX_ROUNDS):
            if keys:
                started = time.monotonic()
                try:
                    got = await prefetch.aget_many(cache.backend, keys, heads & set(keys))
                except Exception:
                    cache.failed(started, "fast lane: cache unavailable")
                    return None
                fetched.add(keys, got)
                fetched.heads |= heads & set(keys)
            outcome = self._attempt(call, fetched)
            if isinstance(outcome, Answer):
                self.answered += 1
                return outcome
            if outcome is DECLINE:
                return None
            keys = sorted(fetched.wanted - fetched.asked)
            fetched.wanted.clear()
            if fetched.heads and (outcome is NEED_BODY or (outcome is FUNCTION_MISS and not keys)):
                # The body after all (or a header too long to read alone): the whole entry.
                keys, heads = [*keys, *fetched.heads], set()
                fetched.asked -= fetched.heads
                for key in fetched.heads:
                    fetched.got.pop(key, None)
                fetched.heads.clear()
                continue
            if keys:
                continue
            if outcome is IDENTITY_MISS and not computed:
                # The identity's entries are missing or stale: look it up for real (a thread,
                # with the database), which caches them, then read everything again.
                computed = True
                if await sync_to_async(call.resolver.resolve)(call.credential) is None:
                    return None
                keys = sorted(fetched.asked)
                fetched.asked.clear()
                fetched.got.clear()
                continue
            return None  # the function's entry is missing or stale: Django computes it
        return None

    def _attempt(self, call: Call, fetched: prefetch.Prefetch) -> Answer | _Outcome:
        """One run of the request's code with every cache read answered from `fetched`."""
        hits_only, prefetched = HITS_ONLY.set(True), prefetch.PREFETCHED.set(fetched)
        try:
            try:
                identity = self._identity(call, fetched)
            except (CacheMiss, SynchronousOnlyOperation):
                return IDENTITY_MISS
            if identity is None:
                return DECLINE
            kind = identity.kind
            if not self.templates.has(call.route_id, kind, 200, call.headers):
                return DECLINE  # Django answers, and the lane learns its headers
            try:
                request = call.request(identity)
                raw = call.params or self._input(call, request)
                result = call.fn.call(raw, Context(user=identity.user, request=request))
            except (CacheMiss, SynchronousOnlyOperation):
                return FUNCTION_MISS
        except Exception:
            return DECLINE  # an error, a refusal: Django answers it in its own words
        finally:
            prefetch.PREFETCHED.reset(prefetched)
            HITS_ONLY.reset(hits_only)
        if not result.hit or result.etag is None:
            return DECLINE
        _put(self.results, call.shapes[0], result.key)
        etag = result.etag.encode()
        conditional = call.headers.get("if-none-match")
        if conditional and etag_matches(conditional, result.etag):
            status, body = 304, b""
        elif result.key in fetched.heads:
            return NEED_BODY  # read for its ETag alone, and it changed: no body to send yet
        else:
            status, body = 200, result_body(result, call.route.envelope)
        slots = (str(len(body)).encode(), etag)
        sent = self.templates.headers(call.route_id, kind, status, call.headers, slots)
        return DECLINE if sent is None else Answer(status, sent, body)

    def call_cached(self, fn: ReactiveFunction, raw: Any, ctx: Context) -> Result | None:
        """``fn.call(raw, ctx)`` as the lane runs it once the caller is known, or None.

        Every cache read is answered from one fetch of the keys the same call
        read last time (more fetches while it learns them); None unless it all
        hit. Outside a request (tests, a project's own async code), on the
        calling thread: never inside a transaction, whose writes the cache
        cannot see.
        """
        if fn.kind != "query" or transaction.get_connection().in_atomic_block:
            return None
        cache = reactive_cache()
        user = getattr(ctx.user, "pk", None)
        shape = ("call", fn.name, json.dumps(raw, sort_keys=True, default=str), str(user))
        fetched, keys = prefetch.Prefetch(), self.shapes.get(shape, [])
        try:
            for _ in range(MAX_ROUNDS):
                if not cache.trusted():
                    return None
                if keys:
                    fetched.add(keys, cache.backend.get_many(keys))
                hits_only, prefetched = HITS_ONLY.set(True), prefetch.PREFETCHED.set(fetched)
                try:
                    result = fn.call(raw, ctx)
                    return result if result.hit else None
                except (CacheMiss, SynchronousOnlyOperation):
                    keys = sorted(fetched.wanted - fetched.asked)
                    fetched.wanted.clear()
                except Exception:
                    return None  # an error, a refusal: the caller's own call raises it
                finally:
                    prefetch.PREFETCHED.reset(prefetched)
                    HITS_ONLY.reset(hits_only)
                if not keys:
                    return None
            return None
        finally:
            self._remember(shape, sorted(fetched.asked))

    def _identity(self, call: Call, fetched: prefetch.Prefetch) -> Identity | None:
        """The caller's identity: the one resolved before if nothing it read has changed."""
        caller = call.shapes[1]
        known = self.known.get(caller)
        if known is not None and known.still(fetched):
            return known.identity
        fetched.reads = []
        try:
            identity = call.resolver.resolve(call.credential)
        finally:
            reads, fetched.reads = fetched.reads, None
        if identity is not None:
            values = {key: fetched.got.get(key, _ABSENT) for key in reads}
            _put(self.known, caller, _Known(time.monotonic(), values, identity))
        return identity

    def _input(self, call: Call, request: _Request) -> Any:
        """The query string parsed into the function's input (kept: it parses the same each time)."""
        key = (call.fn.name, call.query)
        parsed = self.inputs.get(key)
        if parsed is None:
            parsed = query_input(request, call.fn)  # type: ignore[arg-type]
            _put(self.inputs, key, parsed)
        return parsed

    def _remember(self, shape: tuple[str, ...], keys: list[str]) -> None:
        _put(self.shapes, shape, keys)

    # -- learning Django's headers -----------------------------------------------------------

    def learn(self, call: Call, status: int, sent: HeaderList) -> None:
        """Note Django's answer to an eligible request (only hits are learned)."""
        hit = (CACHE_HEADER.lower().encode(), b"hit")
        if status in (200, 304) and hit in [(name.lower(), value) for name, value in sent]:
            self.templates.learn(call.route_id, call.resolver.kind, status, sent, call.headers)

    def _learning(self, send: Send, call: Call) -> Send:
        async def learning_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                sent = [(bytes(n), bytes(v)) for n, v in message.get("headers", [])]
                self.learn(call, message["status"], sent)
            await send(message)

        return learning_send


def _put(lru: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    lru[key] = value
    lru.move_to_end(key)
    while len(lru) > MAX_SHAPES:
        lru.popitem(last=False)


def _headers(scope: Scope) -> CaseInsensitiveMapping[str] | None:
    """The request headers, or None for a request the lane leaves alone.

    A body on a GET, or a credential header sent twice, is Django's to judge.
    """
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name in ("content-length", "transfer-encoding") and value.strip() not in ("", "0"):
            return None
        if name in out:
            if name in ("authorization", "cookie"):
                return None
            value = out[name] + "," + value
        out[name] = value
    return CaseInsensitiveMapping(out)
