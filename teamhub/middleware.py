"""Django's stock middleware, with its I/O-free hooks run on the event loop under ASGI.

Under ASGI, Django runs every ``MiddlewareMixin`` hook through ``sync_to_async``:
about a dozen thread hops per request before the view is reached, which cut an
empty view to ~300 requests/s here. The hooks of the classes below only read
headers and set attributes or lazy objects, so :func:`install` makes them run
inline; a session that changed is still saved on a thread. The classes stay
Django's own (so system checks, and WSGI, see nothing different).
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.security import SecurityMiddleware

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
