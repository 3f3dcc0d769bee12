"""HTTP plumbing shared by the generated API, the SSE view and projects' own routes.

Identity comes from ``request.user`` (session, or a token middleware that also
sets ``request.csrf_processing_done``); unsafe cookie-authenticated requests
must pass Django's CSRF check; every error is one JSON shape.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Any

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.http import parse_etags
from pydantic import BaseModel
from pydantic import ValidationError as PydanticError

from .cache import dumps
from .entries import body_etag
from .errors import InvalidInput, ReactiveError, pydantic_errors
from .functions import Context, ReactiveFunction, Result

logger = logging.getLogger("reactive")

SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")
CACHE_HEADER = "X-Reactive-Cache"
MAX_JSON_DEPTH = 32


class CsrfFailed(ReactiveError):
    """The CSRF token is missing or wrong."""

    status, code, default_message = 403, "csrf_failed", "CSRF verification failed."


class BadRequest(ReactiveError):
    """The request body cannot be read (malformed JSON, too large)."""

    status, code, default_message = 400, "bad_request", "Malformed request."


class TooLarge(ReactiveError):
    """The request body is larger than the server accepts."""

    status, code, default_message = 413, "too_large", "Request body too large."


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> HttpResponse:
    """A JSON response from JSON-ready data."""
    response = HttpResponse(
        dumps(body),
        status=status,
        content_type="application/json",
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def error_response(exc: ReactiveError) -> HttpResponse:
    """The one error shape: ``{"error": {"code", "message", "fields"?}}``."""
    return json_response(exc.as_dict(), status=exc.status)


def _no_view(request: HttpRequest) -> HttpResponse:
    # What the CSRF middleware wraps and checks here: a view that is not csrf_exempt.
    return HttpResponse()


def check_csrf(request: HttpRequest) -> None:
    """Apply Django's CSRF check to unsafe requests not authenticated by a token."""
    if request.method in SAFE_METHODS:
        return
    middleware = CsrfViewMiddleware(_no_view)
    failure = middleware.process_view(request, _no_view, (), {})
    if failure is not None:
        raise CsrfFailed()


def context(request: HttpRequest) -> Context:
    """The reactive Context of a request."""
    return Context(user=getattr(request, "user", None), request=request)


def _depth(value: Any, limit: int) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > limit:
            return depth
        if isinstance(item, dict):
            stack += [(v, depth + 1) for v in item.values()]
        elif isinstance(item, list):
            stack += [(v, depth + 1) for v in item]
    return deepest


def _nul_path(value: Any) -> str | None:
    """The dotted path of the first string (or key) holding a NUL character, if any.

    PostgreSQL cannot store NUL in text or JSON, so such input would fail at the
    database (a 500) in services mode and be stored in embedded mode: rejected
    up front in both.
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path or "__root__"
        elif isinstance(item, dict):
            for key, sub in item.items():
                name = f"{path}.{key}" if path else str(key)
                if "\x00" in str(key):
                    return name.replace("\x00", "\\0")
                stack.append((sub, name))
        elif isinstance(item, list):
            stack += [(sub, f"{path}.{i}" if path else str(i)) for i, sub in enumerate(item)]
    return None


class _NotFinite(ValueError):
    """A JSON number too large for a float (1e400), which no database stores."""


def _constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")  # Python's json accepts NaN and Infinity


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


def _reject_nul(path: str) -> InvalidInput:
    return InvalidInput(errors=[{"field": path, "message": "NUL characters are not allowed."}])


def parse_json(raw: str | bytes) -> Any:
    """JSON text as Python values, strictly; for every JSON a client sends.

    400 (BadRequest) for what is not JSON, NaN and Infinity included; 422
    (InvalidInput) for a number no float holds (1e400), nesting deeper than
    MAX_JSON_DEPTH (thousands of levels included: no RecursionError), and NUL
    characters anywhere.
    """
    try:
        value = json.loads(raw, parse_constant=_constant, parse_float=_finite)
    except _NotFinite:
        raise InvalidInput("A number is out of range.") from None
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("The body is not valid JSON.") from None
    except RecursionError:  # thousands of nested brackets: deeper than any input allows
        raise InvalidInput(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.") from None
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise InvalidInput(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.")
    if (b"\\u0000" in raw) if isinstance(raw, bytes) else ("\\u0000" in raw):  # NUL comes escaped
        path = _nul_path(value)
        if path is not None:
            raise _reject_nul(path)
    return value


def json_body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object body ({} when empty); 400/413/422 on anything else."""
    try:
        raw = request.body
    except RequestDataTooBig:
        raise TooLarge() from None
    except SuspiciousOperation:
        raise BadRequest() from None
    if not raw:
        return {}  # no body at all means no input; whitespace alone is malformed JSON
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise InvalidInput(
            "The body must be a JSON object.",
            errors=[{"field": "__root__", "message": "Expected a JSON object."}],
        )
    return body


def query_input(request: HttpRequest, fn: ReactiveFunction) -> dict[str, Any] | BaseModel:
    """A query's input from the query string (list fields take repeated parameters).

    A query string holds only text, so it is parsed leniently (``limit=12`` is
    the integer 12), where a JSON body's ``"12"`` is refused: the parsed input
    model is returned. An anonymous caller gets the raw values back, so that
    the call answers 401 before it looks at them.
    """
    out: dict[str, Any] = {}
    for key in request.GET:
        values = request.GET.getlist(key)
        field = fn.input.model_fields.get(key) or next(
            (f for f in fn.input.model_fields.values() if f.alias == key), None
        )
        is_list = field is not None and "list" in str(field.annotation)
        out[key] = values if is_list else values[-1]
        if any("\x00" in v for v in values) or "\x00" in key:
            raise _reject_nul(key.replace("\x00", "\\0"))
    try:
        return fn.input.model_validate(out, strict=False)
    except PydanticError as exc:
        if not fn.public and not getattr(getattr(request, "user", None), "is_authenticated", False):
            return out
        raise InvalidInput(errors=pydantic_errors(exc.errors())) from None


def result_body(result: Result, envelope: bool = True) -> bytes:
    """A query's answer as sent: the data alone, or ``{data, key, tags, cursor}``.

    The cached JSON of the data is spliced in, never decoded and re-encoded.
    """
    data = result.body if result.body is not None else dumps(result.data).encode()
    if not envelope:
        return data
    rest = dumps({"key": result.key, "tags": result.tags, "cursor": result.cursor})
    return b'{"data":' + data + b"," + rest[1:].encode()


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names `etag` (weak comparison, ``*`` included)."""
    tags = parse_etags(if_none_match)
    return "*" in tags or etag.removeprefix("W/") in (t.removeprefix("W/") for t in tags)


def result_response(
    result: Result,
    envelope: bool = True,
    status: int = 200,
    if_none_match: str | None = None,
) -> HttpResponse:
    """A query's answer with its cache header and ETag; 304 when `if_none_match` names it."""
    body = result_body(result, envelope)
    etag = result.etag or body_etag(body)
    if if_none_match and status == 200 and etag_matches(if_none_match, etag):
        response = HttpResponse(status=304)
        del response["Content-Type"]
    else:
        response = HttpResponse(body, status=status, content_type="application/json")
    response[CACHE_HEADER] = "hit" if result.hit else "miss"
    response["Cache-Control"] = "private, no-cache"
    response["ETag"] = etag
    return response


def run(
    fn: ReactiveFunction,
    request: HttpRequest,
    source: Callable[[], Any],
    envelope: bool = True,
    status: int = 200,
) -> HttpResponse:
    """Call `fn` with the input `source` reads from the request; render answer or error."""
    try:
        check_csrf(request)
        result = fn.call(source(), context(request))
    except ReactiveError as exc:
        return error_response(exc)
    if fn.kind == "query":
        conditional = request.headers.get("If-None-Match") if request.method == "GET" else None
        return result_response(result, envelope, status, conditional)
    return json_response({"data": result.data} if envelope else result.data, status=status)
