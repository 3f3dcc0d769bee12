"""The Ninja router generated from the registry: one typed operation per function.

Queries answer ``GET /rx/<name>?<input>`` (and ``POST`` with a JSON body);
mutations answer ``POST /rx/<name>``. Input and output schemas come from the
functions' pydantic models and land in the OpenAPI document; adding a function
to the registry adds its operation with no other code.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI, Router
from pydantic import TypeAdapter

from . import inline
from .errors import NotFound, ReactiveError
from .functions import ReactiveFunction, Registry
from .http import check_csrf, error_response, json_body, query_input, run

REF = "#/components/schemas/{model}"
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "fields": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
            },
        }
    },
}
ERRORS = {
    "400": "Malformed request",
    "401": "Not authenticated",
    "403": "Not a member, or CSRF failed",
    "404": "No such row",
    "409": "Conflict",
    "413": "Body too large",
    "422": "Invalid input (fields named)",
}


class ReactiveAPI(NinjaAPI):
    """A NinjaAPI that also publishes the schemas the generated operations refer to."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.extra_schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}

    def get_openapi_schema(self, **kwargs: Any):
        """Called to build the OpenAPI document: adds the schemas the operations refer to."""
        schema = super().get_openapi_schema(**kwargs)
        schema.setdefault("components", {}).setdefault("schemas", {}).update(self.extra_schemas)
        return schema

    def json_schema(self, annotation: Any, mode: str = "validation") -> dict[str, Any]:
        """The JSON schema of a type, its definitions moved into the components."""
        schema = TypeAdapter(annotation).json_schema(by_alias=True, ref_template=REF, mode=mode)
        self.extra_schemas.update(schema.pop("$defs", {}))
        return schema


def _parameters(api: ReactiveAPI, fn: ReactiveFunction) -> list[dict[str, Any]]:
    schema = api.json_schema(fn.input)
    required = set(schema.get("required", ()))
    return [
        {"in": "query", "name": name, "required": name in required, "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]


def _openapi(api: ReactiveAPI, fn: ReactiveFunction, method: str) -> dict[str, Any]:
    data = api.json_schema(fn.output, mode="serialization") if fn.output is not None else {}
    if fn.kind == "query":
        props = {
            "data": data,
            "key": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "cursor": {"type": "string"},
        }
    else:
        props = {"data": data}
    ok = {"type": "object", "required": list(props), "properties": props}
    error = {"content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}}
    extra: dict[str, Any] = {
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": ok}}},
            **{code: {"description": text, **error} for code, text in ERRORS.items()},
        }
    }
    if fn.kind == "query":
        extra["responses"]["200"]["headers"] = {
            "X-Reactive-Cache": {"schema": {"type": "string", "enum": ["hit", "miss"]}}
        }
    if method == "GET":
        extra["parameters"] = _parameters(api, fn)
    else:
        extra["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": api.json_schema(fn.input)}},
        }
    return extra


def _answer(fn: ReactiveFunction, request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return run(fn, request, lambda: query_input(request, fn))
    return run(fn, request, lambda: json_body(request))


def _view(fn: ReactiveFunction):
    async def view(request: HttpRequest) -> HttpResponse:
        """Answer a call of `fn`: queries try the event loop (cache hits), mutations a thread."""
        if fn.kind == "query":  # a cache hit is answered on the event loop
            return await inline.call(_answer, fn, request)
        return await sync_to_async(_answer)(fn, request)

    view.__name__ = fn.name.replace(".", "_")
    return view


def _unknown(request: HttpRequest, name: str) -> HttpResponse:
    try:
        check_csrf(request)  # like every unsafe route: a forged POST learns nothing, not even 404
    except ReactiveError as exc:
        return error_response(exc)
    return error_response(NotFound(f"No reactive function named {name!r}."))


def build_router(api: ReactiveAPI, registry: Registry) -> Router:
    """A router with one operation per registered function (plus a 404 for unknown names)."""
    router = Router(tags=["reactive"])
    for fn in sorted(registry.values(), key=lambda f: f.name):
        view = _view(fn)
        group = fn.name.split(".")[0]
        methods = ["GET", "POST"] if fn.kind == "query" else ["POST"]
        for method in methods:
            router.add_api_operation(
                f"/{fn.name}",
                [method],
                view,
                auth=None,
                operation_id=f"{fn.name}.{method.lower()}" if fn.kind == "query" else fn.name,
                summary=f"{fn.kind} {fn.name}",
                description=fn.description,
                tags=[group],
                openapi_extra=_openapi(api, fn, method),
            )
    router.add_api_operation(
        "/{name}", ["GET", "POST"], _unknown, auth=None, include_in_schema=False
    )
    return router
