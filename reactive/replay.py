"""The headers Django sends with a hit, learned from Django itself, for the fast lane to send.

The fast lane must answer byte for byte as Django would, whatever middleware
a project runs (``SecurityMiddleware``'s headers, ``X-Frame-Options``,
``Vary: Cookie`` after a session lookup, a project's own). Rather than
re-implement each, it learns: every hit Django answers for a fast-lane route
is recorded as a *template* (its status and headers, with the ETag and
Content-Length left as slots), per route, identity kind, status and the values
of the request headers its ``Vary`` names. A template is used once two such
answers in a row agree, so a header that differs per request (a request id, a
timing header) is never replayed: it keeps the lane from answering at all.
An answer that sets a cookie is never learned.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.signals import setting_changed

HeaderList = list[tuple[bytes, bytes]]
Shape = list[tuple[bytes, bytes, bytes]]  # name, value (empty in a slot), lowercased name
SLOTS = (b"content-length", b"etag")
# A learned template from settings that shape responses: forgotten when one changes.
_SHAPING = ("MIDDLEWARE", "DEFAULT_CHARSET", "REACTIVE", "X_FRAME_OPTIONS")
_SHAPING_PREFIXES = ("SECURE_", "SESSION_", "CSRF_", "LANGUAGE", "USE_I18N")


class Templates:
    """Learned response templates: ``(route, kind, status)`` -> the Vary names and headers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # (route, kind, status) -> (vary names, {vary values: headers})
        self.adopted: dict[tuple[str, str, int], tuple[tuple[str, ...], dict[Any, Shape]]] = {}
        self.pending: dict[Any, Shape] = {}

    def clear(self) -> None:
        """Forget every template (settings changed)."""
        with self.lock:
            self.adopted.clear()
            self.pending.clear()

    def learn(
        self, route: str, kind: str, status: int, headers: HeaderList, request: Mapping[str, str]
    ) -> None:
        """Record Django's answer to a hit; adopt it once the one before agrees."""
        names = {name.lower() for name, _ in headers}
        if b"set-cookie" in names:
            return
        vary = _vary_names(headers)
        values = tuple(request.get(name, "") for name in vary)
        shape = [
            (name, b"" if name.lower() in SLOTS else value, name.lower()) for name, value in headers
        ]
        key = (route, kind, status, vary, values)
        with self.lock:
            current = self.adopted.get((route, kind, status))
            if current is not None and current[0] == vary and current[1].get(values) == shape:
                return
            if self.pending.get(key) != shape:
                self.pending[key] = shape
                if current is not None and values in current[1]:
                    del current[1][values]  # Django answers differently now: wait for agreement
                return
            del self.pending[key]
            if current is None or current[0] != vary:
                current = self.adopted[(route, kind, status)] = (vary, {})
            current[1][values] = shape

    def _shape(
        self, route: str, kind: str, status: int, request: Mapping[str, str]
    ) -> Shape | None:
        found = self.adopted.get((route, kind, status))
        if found is None:
            return None
        vary, by_values = found
        return by_values.get(tuple(request.get(name, "") for name in vary))

    def has(self, route: str, kind: str, status: int, request: Mapping[str, str]) -> bool:
        """Whether a template is learned for this answer."""
        return self._shape(route, kind, status, request) is not None

    def headers(
        self, route: str, kind: str, status: int, request: Mapping[str, str], slots: Sequence[bytes]
    ) -> HeaderList | None:
        """The headers to send, slots filled (content-length, etag), or None if not learned yet."""
        shape = self._shape(route, kind, status, request)
        if shape is None:
            return None
        length, etag = slots
        return [
            (name, length if low == b"content-length" else etag if low == b"etag" else value)
            for name, value, low in shape
        ]


def _vary_names(headers: HeaderList) -> tuple[str, ...]:
    """The request headers a response varies on, except the identity (the lane keys by it)."""
    names: set[str] = set()
    for name, value in headers:
        if name.lower() == b"vary":
            names.update(v.strip().lower() for v in value.decode("latin-1").split(","))
    return tuple(sorted(names - {"cookie", "authorization", ""}))


templates = Templates()


def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in _SHAPING or setting.startswith(_SHAPING_PREFIXES):
        templates.clear()


setting_changed.connect(_setting_changed)
