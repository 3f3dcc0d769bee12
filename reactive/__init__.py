"""A reactive data layer for Django: cached functions, invalidated on commit, pushed live.

This module is the public API: every name a project uses is importable from
``reactive`` itself (and test helpers from :mod:`reactive.testing`); the
modules behind it are internal and may change. The names load on first use,
so that listing ``reactive`` in ``INSTALLED_APPS`` never imports models before
the apps are ready. docs/reactive-functions.md describes them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

# public name -> (internal module, name there)
_EXPORTS: dict[str, tuple[str, str]] = {
    # declaring functions
    "Context": ("functions", "Context"),
    "ReactiveFunction": ("functions", "ReactiveFunction"),
    "Registry": ("functions", "Registry"),
    "Result": ("functions", "Result"),
    "define_reactive_function": ("functions", "define_reactive_function"),
    "mutation": ("functions", "mutation"),
    "query": ("functions", "query"),
    "registry": ("functions", "registry"),
    "Input": ("schema", "Input"),
    "NoInput": ("schema", "NoInput"),
    # invalidation and tags
    "invalidate": ("capture", "invalidate"),
    "invalidate_model": ("capture", "invalidate_model"),
    "invalidate_all": ("cache", "invalidate_all"),
    "row_tag": ("tags", "row_tag"),
    "scoped_tag": ("tags", "scoped_tag"),
    "table_tag": ("tags", "table_tag"),
    "cached": ("cache", "cached"),
    "cached_many": ("cache", "cached_many"),
    # errors
    "ReactiveError": ("errors", "ReactiveError"),
    "InvalidInput": ("errors", "InvalidInput"),
    "NotAuthenticated": ("errors", "NotAuthenticated"),
    "Forbidden": ("errors", "Forbidden"),
    "NotFound": ("errors", "NotFound"),
    "MethodNotAllowed": ("errors", "MethodNotAllowed"),
    "Conflict": ("errors", "Conflict"),
    "BadRequest": ("http", "BadRequest"),
    "CsrfFailed": ("http", "CsrfFailed"),
    "TooLarge": ("http", "TooLarge"),
    "field_errors": ("errors", "field_errors"),
    "pydantic_errors": ("errors", "pydantic_errors"),
    # HTTP: a project's own views and routes
    "check_csrf": ("http", "check_csrf"),
    "error_response": ("http", "error_response"),
    "json_body": ("http", "json_body"),
    "json_response": ("http", "json_response"),
    "parse_json": ("http", "parse_json"),
    "query_input": ("http", "query_input"),
    "request_context": ("http", "context"),
    "run_function": ("http", "run"),
    # the OpenAPI document (Django Ninja)
    "ReactiveAPI": ("api", "ReactiveAPI"),
    "build_router": ("api", "build_router"),
    "build_events_router": ("api", "build_events_router"),
    "CACHE_HEADERS": ("api", "CACHE_HEADERS"),
    "READ_SECURITY": ("api", "READ"),
    "WRITE_SECURITY": ("api", "WRITE"),
    "LOGIN_SECURITY": ("api", "ANONYMOUS_WRITE"),
    # live streams and the server process
    "events_view": ("sse", "events_view"),
    "ack_view": ("sse", "ack_view"),
    "websocket_application": ("routing", "websocket_application"),
    "Lifespan": ("lifespan", "Lifespan"),
    "start_drainer": ("drainer", "start_drainer"),
    "REAUTHENTICATE": ("identity", "ATTRIBUTE"),
    "call_inline": ("inline", "call"),
    # the fast lane: hits answered before Django
    "FastLane": ("fastlane", "FastLane"),
    "Route": ("fastlane", "Route"),
    "Identity": ("identity", "Identity"),
    "IdentityResolver": ("identity", "IdentityResolver"),
    "SessionIdentity": ("sessions", "SessionIdentity"),
    "user_lookup": ("users", "user_lookup"),
    "user_from": ("users", "user_from"),
    # live fragments (server-rendered HTML)
    "fragment": ("fragments", "fragment"),
    "Loader": ("fragments", "Loader"),
    # observability
    "ClientPosition": ("models", "ClientPosition"),
    "metrics_snapshot": ("metrics", "snapshot"),
    "process_totals": ("metrics", "process_totals"),
}

__all__ = [
    "BadRequest",
    "CACHE_HEADERS",
    "ClientPosition",
    "Conflict",
    "Context",
    "CsrfFailed",
    "FastLane",
    "Forbidden",
    "Identity",
    "IdentityResolver",
    "Input",
    "InvalidInput",
    "LOGIN_SECURITY",
    "Lifespan",
    "Loader",
    "MethodNotAllowed",
    "NoInput",
    "NotAuthenticated",
    "NotFound",
    "READ_SECURITY",
    "REAUTHENTICATE",
    "ReactiveAPI",
    "ReactiveError",
    "ReactiveFunction",
    "Registry",
    "Result",
    "Route",
    "SessionIdentity",
    "TooLarge",
    "WRITE_SECURITY",
    "ack_view",
    "build_events_router",
    "build_router",
    "cached",
    "cached_many",
    "call_inline",
    "check_csrf",
    "define_reactive_function",
    "error_response",
    "events_view",
    "field_errors",
    "fragment",
    "invalidate",
    "invalidate_all",
    "invalidate_model",
    "json_body",
    "json_response",
    "metrics_snapshot",
    "mutation",
    "parse_json",
    "process_totals",
    "pydantic_errors",
    "query",
    "query_input",
    "registry",
    "request_context",
    "row_tag",
    "run_function",
    "scoped_tag",
    "start_drainer",
    "table_tag",
    "user_from",
    "user_lookup",
    "websocket_application",
]


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'reactive' has no attribute {name!r}") from None
    value = getattr(import_module(f".{module}", __name__), attribute)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from .api import ANONYMOUS_WRITE as LOGIN_SECURITY
    from .api import CACHE_HEADERS, ReactiveAPI, build_events_router, build_router
    from .api import READ as READ_SECURITY
    from .api import WRITE as WRITE_SECURITY
    from .cache import cached, cached_many, invalidate_all
    from .capture import invalidate, invalidate_model
    from .drainer import start_drainer
    from .errors import (
        Conflict,
        Forbidden,
        InvalidInput,
        MethodNotAllowed,
        NotAuthenticated,
        NotFound,
        ReactiveError,
        field_errors,
        pydantic_errors,
    )
    from .fastlane import FastLane, Route
    from .fragments import Loader, fragment
    from .functions import (
        Context,
        ReactiveFunction,
        Registry,
        Result,
        define_reactive_function,
        mutation,
        query,
        registry,
    )
    from .http import (
        BadRequest,
        CsrfFailed,
        TooLarge,
        check_csrf,
        error_response,
        json_body,
        json_response,
        parse_json,
        query_input,
    )
    from .http import context as request_context
    from .http import run as run_function
    from .identity import ATTRIBUTE as REAUTHENTICATE
    from .identity import Identity, IdentityResolver
    from .inline import call as call_inline
    from .lifespan import Lifespan
    from .metrics import process_totals
    from .metrics import snapshot as metrics_snapshot
    from .models import ClientPosition
    from .routing import websocket_application
    from .schema import Input, NoInput
    from .sessions import SessionIdentity
    from .sse import ack_view, events_view
    from .tags import row_tag, scoped_tag, table_tag
    from .users import user_from, user_lookup
