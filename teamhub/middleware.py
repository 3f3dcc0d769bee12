"""Django's stock middleware, with its I/O-free hooks run on the event loop under ASGI.

Under ASGI, Django runs every ``MiddlewareMixin`` hook through ``sync_to_async``:
about a dozen thread hops per request before the view is reached, which cut an
empty view to ~300 requests/s here. The hooks of the classes below only read
headers and set attributes or lazy objects, so :func:`install` makes them run
inline; a session that changed is still saved on a thread. The classes stay
Django's own (so system checks, and WSGI, see nothing different).
"""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.security import SecurityMiddleware

from reactive import MethodNotAllowed, NotFound, TooLarge, error_response

INLINE = (
    SecurityMiddleware,
    SessionMiddleware,
    CommonMiddleware,
    CsrfViewMiddleware,
    AuthenticationMiddleware,
    MessageMiddleware,
    XFrameOptionsMiddleware,
)


async def _inline_acall(self, request: HttpRequest) -> HttpResponse:
    response = None
    if hasattr(self, "process_request"):
        response = self.process_request(request)
    response = response or await self.get_response(request)
    if not hasattr(self, "process_response"):
        return response
    if isinstance(self, SessionMiddleware) and _session_needs_saving(request):
        return await sync_to_async(self.process_response)(request, response)  # database I/O
    return self.process_response(request, response)


def _session_needs_saving(request: HttpRequest) -> bool:
    session = getattr(request, "session", None)
    return session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


def install() -> None:
    """Run the stock middleware's hooks inline in async mode (idempotent)."""
    for cls in INLINE:
        cls.__acall__ = _inline_acall


# --- request body limits ----------------------------------------------------------------------


def body_limit() -> int | None:
    """The largest request body accepted, in bytes (``REQUEST_BODY_MAX_SIZE``, default 1 MiB)."""
    return getattr(settings, "REQUEST_BODY_MAX_SIZE", settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


def _too_large() -> HttpResponse:
    return error_response(TooLarge())


class Hybrid:
    """A middleware that runs as what it wraps is: a coroutine under ASGI (no thread hop)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)


class RequestSizeLimit(Hybrid):
    """413 for a request whose declared body is over the limit, before anything reads it.

    Without it, a form page answers such a request with Django's 400 page (the
    API's JSON views already answer 413). Async-capable: no thread hop under ASGI.
    """

    def __call__(self, request: HttpRequest):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return self.refuse(request) or self.get_response(request)

    async def __acall__(self, request: HttpRequest):
        return self.refuse(request) or await self.get_response(request)

    @staticmethod
    def refuse(request: HttpRequest) -> HttpResponse | None:
        limit = body_limit()
        declared = request.META.get("CONTENT_LENGTH") or ""
        if limit is not None and declared.isdigit() and int(declared) > limit:
            return _too_large()
        return None


class BodyLimit:
    """ASGI wrapper: refuse an HTTP body over the limit before Django spools all of it.

    Django's ASGI handler reads the whole body (into memory, then a temporary
    file) before any middleware runs, and uvicorn sets no limit: one request
    declaring 10 GB, or sending chunks forever, would fill the disk. A declared
    length over the limit is answered 413 at once; a body without a length
    (chunked) is counted as it arrives and cut off at the limit.
    Wrap the HTTP application: ``ProtocolTypeRouter({"http": BodyLimit(django_asgi), ...})``.
    """

    def __init__(self, app, limit: int | None = None):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        limit = self.limit if self.limit is not None else body_limit()
        if scope["type"] != "http" or limit is None:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or ())
        declared = headers.get(b"content-length")
        if declared is not None:
            # The server frames the body by this length, so it is all there is to check.
            if declared.isdigit() and int(declared) > limit:
                return await self.refuse(send)
            return await self.app(scope, receive, send)
        if b"transfer-encoding" not in headers and scope.get("method") in ("GET", "HEAD"):
            return await self.app(scope, receive, send)  # no body: nothing to count
        received = 0
        exceeded = started = False

        async def counted_receive():
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True  # Django stops reading (RequestAborted) and answers nothing
                    return {"type": "http.disconnect"}
            return message

        async def watched_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted_receive, watched_send)
        if exceeded and not started:
            await self.refuse(send)
        return None

    @staticmethod
    async def refuse(send) -> None:
        response = _too_large()
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(response.content)).encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.content})


# --- one error shape under /api/ --------------------------------------------------------------

API_PREFIX = "/api/"
METHOD_ORDER = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class ApiErrors(Hybrid):
    """Everything under ``/api/`` answers in the API's JSON shape, HEAD and OPTIONS included.

    The API's own handlers already answer JSON; what reaches a client as HTML
    otherwise is Django's 404 page (an unknown path) and Ninja's plain-text 405
    (a method a path does not take). HEAD is answered as GET without a body, and
    OPTIONS with 204 and ``Allow``, as RFC 9110 asks, instead of 405.
    Async-capable: no thread hop under ASGI.
    """

    def __call__(self, request: HttpRequest):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        method = self.before(request)
        return self.after(method, self.get_response(request))

    async def __acall__(self, request: HttpRequest):
        if not request.path.startswith(API_PREFIX):
            return await self.get_response(request)
        method = self.before(request)
        return self.after(method, await self.get_response(request))

    @staticmethod
    def before(request: HttpRequest) -> str:
        method = request.method or "GET"
        if method == "HEAD":
            request.method = "GET"
        return method

    @staticmethod
    def after(method: str, response: HttpResponseBase) -> HttpResponseBase:
        if response.status_code == 405:
            methods = {m.strip() for m in response.get("Allow", "").split(",")} | {"OPTIONS"}
            if "GET" in methods:
                methods.add("HEAD")
            # Ninja keeps a path's methods in a set: list them in one order in every process.
            allowed = [m for m in METHOD_ORDER if m in methods]
            if method == "OPTIONS":
                response = HttpResponse(status=204)
                del response["Content-Type"]
            elif not _is_json(response):
                response = error_response(
                    MethodNotAllowed(f"{method} is not allowed here; use {', '.join(allowed)}.")
                )
            response["Allow"] = ", ".join(allowed)
        elif response.status_code == 404 and not _is_json(response):
            response = error_response(NotFound("No such API path."))
        if method == "HEAD":
            response = _without_body(response)
        return response


def _is_json(response: HttpResponseBase) -> bool:
    return response.get("Content-Type", "").startswith("application/json")


def _without_body(response: HttpResponseBase) -> HttpResponseBase:
    """The response to HEAD: GET's status and headers (Content-Length included), no body."""
    bare = HttpResponse(status=response.status_code)
    for name, value in response.items():
        bare[name] = value
    bare.cookies = response.cookies
    response.close()  # a stream (the SSE view) is never started
    return bare
