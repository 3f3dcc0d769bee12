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
from django.http import QueryDict
from django.utils.datastructures import CaseInsensitiveMapping

from . import prefetch
from .cache import reactive_cache
from .functions import Context, ReactiveFunction, registry
from .http import CACHE_HEADER, etag_matches, query_input, result_body
from .identity import Identity, IdentityResolver
from .inline import HITS_ONLY, CacheMiss
from .replay import HeaderList, Templates, templates
from .types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("reactive")

MAX_ROUNDS = 8  # fetches per request: a shape seen before needs one
MAX_SHAPES = 20_000  # request shapes whose keys are remembered (an LRU)
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


class _Request:
    """What access checks and ``query_input`` read of a request, built from the ASGI scope."""

    method = "GET"

    def __init__(self, path: str, query: str, headers: CaseInsensitiveMapping[str], user: Any):
        self.path = self.path_info = path
        self.GET = QueryDict(query)
        self.headers = headers
        self.user = user


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

    @property
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

    def shapes(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The request's shape, and its caller's.

        Requests of one shape (path, query and credential, hashed) read the
        same keys; requests of one caller share at least the identity's.
        """
        secret = hashlib.blake2b(self.credential.encode(), digest_size=16).hexdigest()
        return (self.path, self.query, self.resolver.kind, secret), (self.resolver.kind, secret)

    def arguments(self, identity: Identity) -> tuple[Any, Context]:
        """The function's raw input and context, as Django's view builds them."""
        request = _Request(self.path, self.query, self.headers, identity.user)
        for name, value in identity.attributes.items():
            setattr(request, name, value)
        raw = self.params or query_input(request, self.fn)  # type: ignore[arg-type]
        return raw, Context(user=identity.user, request=request)


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
        self.answered = 0  # requests the lane answered itself (tests read it)

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
        headers = _headers(scope)
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
        shape, caller = call.shapes()
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
        for _ in range(MAX_ROUNDS):
            if keys:
                started = time.monotonic()
                try:
                    fetched.add(keys, await prefetch.aget_many(cache.backend, keys))
                except Exception:
                    cache.failed(started, "fast lane: cache unavailable")
                    return None
            outcome = self._attempt(call, fetched)
            if isinstance(outcome, Answer):
                self.answered += 1
                return outcome
            if outcome is DECLINE:
                return None
            keys = sorted(fetched.wanted - fetched.asked)
            fetched.wanted.clear()
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
                identity = call.resolver.resolve(call.credential)
            except (CacheMiss, SynchronousOnlyOperation):
                return IDENTITY_MISS
            if identity is None:
                return DECLINE
            kind = identity.kind
            if self.templates.headers(call.route_id, kind, 200, call.headers, (b"", b"")) is None:
                return DECLINE  # Django answers, and the lane learns its headers
            try:
                result = call.fn.call(*call.arguments(identity))
            except (CacheMiss, SynchronousOnlyOperation):
                return FUNCTION_MISS
        except Exception:
            return DECLINE  # an error, a refusal: Django answers it in its own words
        finally:
            prefetch.PREFETCHED.reset(prefetched)
            HITS_ONLY.reset(hits_only)
        if not result.hit or result.etag is None:
            return DECLINE
        etag = result.etag.encode()
        conditional = call.headers.get("if-none-match")
        if conditional and etag_matches(conditional, result.etag):
            status, body = 304, b""
        else:
            status, body = 200, result_body(result, call.route.envelope)
        slots = (str(len(body)).encode(), etag)
        sent = self.templates.headers(call.route_id, kind, status, call.headers, slots)
        return DECLINE if sent is None else Answer(status, sent, body)

    def _remember(self, shape: tuple[str, ...], keys: list[str]) -> None:
        self.shapes[shape] = keys
        self.shapes.move_to_end(shape)
        while len(self.shapes) > MAX_SHAPES:
            self.shapes.popitem(last=False)

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
