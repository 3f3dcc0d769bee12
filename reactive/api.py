"""The Ninja router generated from the registry, and the OpenAPI document it publishes.

Queries answer ``GET /rx/<name>?<input>`` (and ``POST`` with a JSON body);
mutations answer ``POST /rx/<name>``. Input and output schemas come from the
functions' pydantic models and land in the OpenAPI document as named
components; adding a function to the registry adds its operations with no
other code.

The document is written for the tools that read it (openapi-typescript,
Redocly, Schemathesis, Swagger UI): every operation is described in full here
(`ReactiveAPI.document`) rather than merged into what Ninja infers from a
view's signature, so that status codes are strings once, request bodies are
required when the input has required fields, the security schemes (Bearer
token; session cookie plus CSRF header) are declared, and links from a
``create`` to the operations that take its ``id`` let a stateful fuzzer
follow them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from ninja import NinjaAPI, Router
from ninja.openapi.schema import OpenAPISchema
from pydantic import BaseModel, ConfigDict, Field, Strict, TypeAdapter, ValidationError
from pydantic.json_schema import JsonSchemaMode

from . import inline
from .errors import InvalidInput, NotFound, ReactiveError
from .functions import ReactiveFunction, Registry
from .http import CACHE_HEADER, check_csrf, error_response, json_body, query_input, run

REF = "#/components/schemas/{model}"
# What JSON bodies and query strings cannot hold (reactive.http.parse_json refuses it): a
# string matching this is refused. (As `not`, not a pattern of everything else: generators
# such as Schemathesis draw from a negated pattern as fast as from a plain string.)
NUL = {"pattern": "\\u0000"}

ERROR_COMPONENTS = {
    "FieldError": {
        "type": "object",
        "required": ["field", "message"],
        "properties": {
            "field": {
                "type": "string",
                "description": "The offending field's path in the input, dotted (data.name)",
            },
            "message": {"type": "string"},
        },
    },
    "ApiError": {
        "type": "object",
        "description": "The one error shape of the API.",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "examples": ["invalid_input"]},
                    "message": {"type": "string"},
                    "fields": {"type": "array", "items": {"$ref": REF.format(model="FieldError")}},
                },
            }
        },
    },
}
ERRORS = {
    "400": "Malformed request (not JSON)",
    "401": "Not authenticated, or an invalid or revoked token",
    "403": "Not a member of the organization concerned, or CSRF failed",
    "404": "No such function or row",
    "409": "Conflict (a unique name taken)",
    "413": "Body too large",
    "422": "Invalid input (fields named)",
    "429": "Too many failed logins",
}
QUERY_ERRORS = ("400", "401", "403", "404", "413", "422")
MUTATION_ERRORS = ("400", "401", "403", "404", "409", "413", "422")
CACHE_HEADERS = {
    CACHE_HEADER: {
        "description": "Whether the result came from the reactive cache",
        "required": True,
        "schema": {"type": "string", "enum": ["hit", "miss"]},
    }
}

# Security requirements: any one of the alternatives listed (scheme -> its scopes).
Security = list[dict[str, list[str]]]
READ: Security = [{"bearerAuth": []}, {"sessionCookie": []}]
WRITE: Security = [{"bearerAuth": []}, {"sessionCookie": [], "csrfToken": []}]
# login: a CSRF token, no identity yet
ANONYMOUS_WRITE: Security = [{"csrfToken": []}, {"bearerAuth": []}]


def csrf_header() -> str:
    """The CSRF header's name as a client sends it (``X-CSRFToken``)."""
    meta = settings.CSRF_HEADER_NAME
    if meta == "HTTP_X_CSRFTOKEN":
        return "X-CSRFToken"
    return "-".join(part.title() for part in meta.removeprefix("HTTP_").split("_"))


def security_schemes() -> dict[str, Any]:
    """The two ways to authenticate: a Bearer API token, or a session cookie plus CSRF header."""
    return {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "thk_...",
            "description": "An API token (manage.py api_token create, or the admin). No CSRF.",
        },
        "sessionCookie": {
            "type": "apiKey",
            "in": "cookie",
            "name": settings.SESSION_COOKIE_NAME,
            "description": "Django's session cookie, set by POST /api/auth/login.",
        },
        "csrfToken": {
            "type": "apiKey",
            "in": "header",
            "name": csrf_header(),
            "description": (
                f"The value of the {settings.CSRF_COOKIE_NAME} cookie (GET /api/auth/me sets "
                "it), on every unsafe request authenticated by the session cookie."
            ),
        },
    }


def camel(name: str) -> str:
    """``agents.getAll`` -> ``agentsGetAll`` (an identifier every generator accepts)."""
    head, *rest = re.split(r"[._\-]", name)
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def pascal(name: str) -> str:
    """``agents.getAll`` -> ``AgentsGetAll``."""
    name = camel(name)
    return name[:1].upper() + name[1:]


def operation_id(fn: ReactiveFunction, method: str) -> str:
    """``agentsGetAll`` for a query's GET, ``agentsGetAllPost`` for its POST, ``agentsCreate``."""
    base = camel(fn.name)
    return base + "Post" if fn.kind == "query" and method == "POST" else base


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _drop_titles(node: Any) -> Any:
    """Pydantic's generated titles ("Organizationid") say nothing the property names do not."""
    if isinstance(node, dict):  # (a property named "title" is a dict: kept)
        return {
            k: _drop_titles(v) for k, v in node.items() if k != "title" or not isinstance(v, str)
        }
    if isinstance(node, list):
        return [_drop_titles(v) for v in node]
    return node


def _strings_without_nul(node: Any) -> Any:
    """Every free-form string of an input says it holds no NUL character (refused: 422)."""
    if isinstance(node, list):
        return [_strings_without_nul(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _strings_without_nul(v) if k != "default" else v for k, v in node.items()}
    if node.get("type") == "string" and not {"pattern", "format", "enum", "const", "not"} & set(
        node
    ):
        node["not"] = dict(NUL)
    if node.get("type") == "object" and node.get("additionalProperties") not in (None, False):
        node.setdefault("propertyNames", {"not": dict(NUL)})
    return node


def _without_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """An input object's properties without ``default`` (noted in their description).

    openapi-typescript makes a property with a default required, so an input
    component that said ``limit`` defaults to 50 would oblige every caller to
    send it; the default is still documented, in words.
    """
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return schema
    out = {}
    for name, prop in properties.items():
        prop = dict(prop)
        if "default" in prop:
            default = prop.pop("default")
            if default not in (None, "") and "description" not in prop:
                prop["description"] = f"Default: {default!r}.".replace("'", '"')
        out[name] = prop
    return {**schema, "properties": out}


def _clean(schema: dict[str, Any], mode: str) -> dict[str, Any]:
    schema = _drop_titles(schema)
    if mode == "validation":
        schema = _strings_without_nul(_without_defaults(schema))
    return schema


def _query_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """A property's schema as a query parameter: a query string cannot say null, only omit."""
    options = prop.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        prop = {k: v for k, v in prop.items() if k != "anyOf"}
        prop = {**rest[0], **prop} if len(rest) == 1 else {**prop, "anyOf": rest}
    if prop.get("default", ...) is None:
        prop = {k: v for k, v in prop.items() if k != "default"}
    return prop


class ReactiveAPI(NinjaAPI):
    """A NinjaAPI whose OpenAPI document describes each operation as `document` was told.

    Operations are found by operationId; Ninja's inferred description of an
    undocumented one is kept (status codes as strings all the same).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.components: dict[str, Any] = copy.deepcopy(ERROR_COMPONENTS)
        self.operation_docs: dict[str, dict[str, Any]] = {}
        self.links: dict[str, dict[str, Any]] = {}
        self.tag_docs: dict[str, str] = {}

    # -- schemas -----------------------------------------------------------------------

    def add_component(self, name: str, schema: dict[str, Any]) -> dict[str, str]:
        """Publish `schema` as components/schemas/`name`; returns a reference to it."""
        existing = self.components.get(name)
        if existing is not None and existing != schema:
            raise ImproperlyConfigured(f"OpenAPI: two different schemas are named {name!r}")
        self.components[name] = schema
        return {"$ref": REF.format(model=name)}

    def json_schema(self, annotation: Any, mode: JsonSchemaMode = "validation") -> dict[str, Any]:
        """The JSON schema of a type; models (and the models inside) become named components."""
        if annotation is None:
            return {}
        schema = TypeAdapter(annotation).json_schema(by_alias=True, ref_template=REF, mode=mode)
        for name, sub in schema.pop("$defs", {}).items():
            self.add_component(name, _clean(sub, mode))
        if _is_model(annotation):
            return self.add_component(annotation.__name__, _clean(schema, mode))
        return _clean(schema, mode)

    def query_parameters(self, model: type[BaseModel]) -> list[dict[str, Any]]:
        """An input model's fields as query parameters (lists repeat: ``?a=1&a=2``)."""
        schema = TypeAdapter(model).json_schema(by_alias=True, ref_template=REF)
        for name, sub in schema.pop("$defs", {}).items():
            self.add_component(name, _clean(sub, "validation"))
        required = set(schema.get("required", ()))
        return [
            {
                "in": "query",
                "name": name,
                "required": name in required,
                "schema": _query_schema(_strings_without_nul(_drop_titles(prop))),
            }
            for name, prop in schema.get("properties", {}).items()
        ]

    def request_body(self, model: Any) -> dict[str, Any]:
        """A JSON request body of `model`, required when it has required fields."""
        schema = TypeAdapter(model).json_schema(by_alias=True, mode="validation")
        return {
            "required": bool(schema.get("required")),
            "content": {"application/json": {"schema": self.json_schema(model)}},
        }

    # -- operations --------------------------------------------------------------------

    def document(
        self,
        operation_id: str,
        *,
        summary: str,
        responses: dict[str, Any],
        security: Security | None,
        description: str = "",
        tags: Iterable[str] = (),
        parameters: list[dict[str, Any]] | None = None,
        request_body: dict[str, Any] | None = None,
    ) -> str:
        """Describe the operation `operation_id` in full; returns the id."""
        if operation_id in self.operation_docs:
            raise ImproperlyConfigured(f"OpenAPI: operation {operation_id!r} described twice")
        doc: dict[str, Any] = {"operationId": operation_id, "summary": summary}
        if description:
            doc["description"] = description
        if tags:
            doc["tags"] = list(tags)
        doc["parameters"] = parameters or []
        if request_body is not None:
            doc["requestBody"] = request_body
        doc["responses"] = responses
        if security is not None:
            doc["security"] = security
        self.operation_docs[operation_id] = doc
        return operation_id

    def responses(
        self,
        status: str,
        schema: dict[str, Any],
        errors: Iterable[str],
        description: str = "OK",
        headers: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A success response with a JSON `schema`, and the API's errors."""
        ok: dict[str, Any] = {"description": description}
        if headers:
            ok["headers"] = headers
        ok["content"] = {"application/json": {"schema": schema}}
        return {status: ok, **error_responses(errors)}

    def link(
        self,
        source: str,
        name: str,
        target: str,
        parameters: dict[str, str] | None = None,
        request_body: Any = None,
    ) -> None:
        """An OpenAPI link from `source`'s success response to the operation `target`."""
        link: dict[str, Any] = {"operationId": target}
        if parameters:
            link["parameters"] = parameters
        if request_body is not None:
            link["requestBody"] = request_body
        self.links.setdefault(source, {})[name] = link

    def crud_links(
        self, create: str, data: str, get_one: str | None, by_id: dict[str, str]
    ) -> None:
        """Links from a create (its result's id at `data`) to the operations taking that id.

        `by_id` maps each operationId (also the link's name) to where the id goes:
        ``{"getAgent": "path.item_id"}``, ``{"agentsUpdate": "body.id"}``; `get_one`
        takes it as ``query.id``.
        """
        expression = f"$response.body#{data}/id"
        targets = dict(by_id)
        if get_one:
            targets.setdefault(get_one, "query.id")
        for target, place in targets.items():
            where, _, field = place.partition(".")
            if where == "body":
                self.link(create, target, target, request_body={field: expression})
            else:
                self.link(create, target, target, parameters={f"{where}.{field}": expression})

    # -- the document ------------------------------------------------------------------

    def get_openapi_schema(self, **kwargs: Any) -> OpenAPISchema:
        """Called to build the OpenAPI document: Ninja's paths, described as documented."""
        schema = super().get_openapi_schema(**kwargs)
        seen: set[str] = set()
        for item in schema["paths"].values():
            for method in list(item):
                op = item[method]
                op_id = op.get("operationId", "")
                if op_id in seen:
                    raise ImproperlyConfigured(f"OpenAPI: operationId {op_id!r} is not unique")
                seen.add(op_id)
                doc = self.operation_docs.get(op_id)
                op = copy.deepcopy(doc) if doc is not None else _string_statuses(op)
                for name, link in self.links.get(op_id, {}).items():
                    ok = next(code for code in op["responses"] if code.startswith("2"))
                    op["responses"][ok].setdefault("links", {})[name] = copy.deepcopy(link)
                item[method] = op
        missing = {
            link["operationId"] for links in self.links.values() for link in links.values()
        } - seen
        if missing:
            raise ImproperlyConfigured(f"OpenAPI: links to unknown operations {sorted(missing)}")
        components = schema.setdefault("components", {})
        found = {**components.get("schemas", {}), **self.components}
        components["schemas"] = dict(sorted(found.items()))
        components["securitySchemes"] = {
            **components.get("securitySchemes", {}),
            **security_schemes(),
        }
        if self.tag_docs:
            schema["tags"] = [{"name": n, "description": d} for n, d in self.tag_docs.items()]
        return schema


def _string_statuses(op: dict[str, Any]) -> dict[str, Any]:
    """Ninja's own description of an operation, its status codes strings (JSON keys are)."""
    op = copy.deepcopy(op)
    responses: dict[str, Any] = {}
    for code, response in op.get("responses", {}).items():
        responses.setdefault(str(code), {}).update(response)
    op["responses"] = responses
    return op


def error_responses(codes: Iterable[str]) -> dict[str, Any]:
    """The error responses `codes`, each in the one error shape."""
    content = {"application/json": {"schema": {"$ref": REF.format(model="ApiError")}}}
    return {code: {"description": ERRORS[code], "content": content} for code in codes}


# --- the generated operations ----------------------------------------------------------------


def _result_schema(api: ReactiveAPI, fn: ReactiveFunction) -> dict[str, Any]:
    """The envelope of `fn`'s answer, as the component ``<Name>Result``."""
    data = api.json_schema(fn.output, mode="serialization") if fn.output is not None else {}
    if fn.kind == "query":
        props = {
            "data": data,
            "key": {"type": "string", "description": "The query key (for subscriptions)"},
            "tags": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Refetch when an invalidation event names one of these",
            },
            "cursor": {
                "type": "string",
                "description": "The event-log position at read time: pass as `since`",
            },
        }
    else:
        props = {"data": data}
    envelope = {"type": "object", "required": list(props), "properties": props}
    return api.add_component(pascal(fn.name) + "Result", envelope)


def _describe(api: ReactiveAPI, fn: ReactiveFunction, method: str) -> str:
    query = fn.kind == "query"
    errors: tuple[str, ...] = QUERY_ERRORS if query else MUTATION_ERRORS
    if method == "GET":
        errors = tuple(e for e in errors if e not in ("400", "413"))
    responses = api.responses(
        "200", _result_schema(api, fn), errors, headers=CACHE_HEADERS if query else None
    )
    how = "the input as query parameters" if method == "GET" else "the input as a JSON body"
    if query and method == "POST":
        how += ", for inputs that do not fit a query string"
    return api.document(
        operation_id(fn, method),
        summary=f"{fn.kind} {fn.name}",
        description=(fn.description + "\n\n" if fn.description else "") + f"With {how}.",
        tags=[fn.name.split(".")[0]],
        parameters=api.query_parameters(fn.input) if method == "GET" else None,
        request_body=api.request_body(fn.input) if method == "POST" else None,
        responses=responses,
        security=[] if fn.public else (READ if method == "GET" else WRITE),
    )


def _answer(fn: ReactiveFunction, request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return run(fn, request, lambda: query_input(request, fn))
    return run(fn, request, lambda: json_body(request))


def _view(fn: ReactiveFunction) -> Callable[[HttpRequest], Awaitable[HttpResponse]]:
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


def _crud(api: ReactiveAPI, registry: Registry) -> None:
    """Links from each ``<resource>.create`` to the ``getOne``/``update``/``delete`` of its id."""
    for fn in registry.values():
        resource, _, verb = fn.name.rpartition(".")
        if verb != "create" or fn.kind != "mutation":
            continue
        get_one = registry.get(f"{resource}.getOne")
        by_id = {
            operation_id(other, "POST"): "body.id"
            for other in (registry.get(f"{resource}.update"), registry.get(f"{resource}.delete"))
            if other is not None
        }
        api.crud_links(
            operation_id(fn, "POST"),
            "/data",
            operation_id(get_one, "GET") if get_one is not None else None,
            by_id,
        )


def build_router(api: ReactiveAPI, registry: Registry) -> Router:
    """A router with one operation per registered function and method (plus a 404 for others)."""
    router = Router(tags=["reactive"])
    for fn in sorted(registry.values(), key=lambda f: f.name):
        view = _view(fn)
        methods = ["GET", "POST"] if fn.kind == "query" else ["POST"]
        for method in methods:
            router.add_api_operation(
                f"/{fn.name}",
                [method],
                view,
                auth=None,
                operation_id=_describe(api, fn, method),
            )
    _crud(api, registry)
    router.add_api_operation(
        "/{name}", ["GET", "POST"], _unknown, auth=None, include_in_schema=False
    )
    return router


# --- the event stream ------------------------------------------------------------------------


POSITION = r"^[0-9]{1,19}$"  # an event-log position (a cursor): a 64-bit integer, in digits


class EventAck(BaseModel):
    """The body of ``POST /events/ack`` (other keys are ignored)."""

    model_config = ConfigDict(populate_by_name=True)

    event_id: (
        Annotated[str, Field(pattern=POSITION)]
        | Annotated[int, Strict(), Field(ge=0, le=2**63 - 1)]
    ) = Field(alias="eventId", description="The last event the client has (its `id:` line)")
    client_id: Annotated[str, Field(max_length=100)] | None = Field(
        None,
        alias="clientId",
        description='One per tab or device; else the X-Client-Id header, else "default"',
    )
    organization_id: Annotated[str, Field(max_length=100)] | None = Field(
        None, alias="organizationId"
    )


class EventAcked(BaseModel):
    """What ``POST /events/ack`` recorded."""

    model_config = ConfigDict(populate_by_name=True)

    event_id: str = Field(alias="eventId")
    client_id: str = Field(alias="clientId")


def check_ack(body: dict[str, Any]) -> None:
    """InvalidInput unless `body` is an EventAck, one error per offending field."""
    try:
        EventAck.model_validate(body)
    except ValidationError as exc:
        fields = dict.fromkeys(str(e["loc"][0]) if e["loc"] else "__root__" for e in exc.errors())
        messages = {"eventId": "An event id (a log position)."}
        raise InvalidInput(
            errors=[{"field": f, "message": messages.get(f, "Invalid value.")} for f in fields]
        ) from None


def build_events_router(
    api: ReactiveAPI,
    events_view: Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ack_view: Callable[[HttpRequest], HttpResponse],
) -> Router:
    """``GET /events`` (Server-Sent Events) and ``POST /events/ack`` as operations of `api`.

    They are served by `events_view` and `ack_view` (reactive.sse) and described
    in the API's document.
    """
    router = Router(tags=["events"])

    async def events(request: HttpRequest) -> HttpResponseBase:
        """The event stream."""
        return await events_view(request)

    def ack(request: HttpRequest) -> HttpResponse:
        """Record a client's delivery position; the body is checked against its schema first."""
        if getattr(request.user, "is_authenticated", False):  # else ack_view answers 401
            try:
                check_csrf(request)
                check_ack(json_body(request))
            except ReactiveError as exc:
                return error_response(exc)
        return ack_view(request)

    invalidation = api.add_component(
        "Invalidation",
        {
            "type": "object",
            "description": "The data of an `invalidate` event: refetch the queries whose tags meet these.",
            "required": ["id", "organizationId", "tags", "at"],
            "properties": {
                "id": {"type": "string", "description": "The log position (the `id:` line)"},
                "organizationId": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "at": {"type": "integer", "description": "Commit time, epoch milliseconds"},
            },
        },
    )
    reset = api.add_component(
        "Reset",
        {
            "type": "object",
            "description": "The data of a `reset` event: drop cached queries and refetch.",
            "required": ["id", "reason", "at"],
            "properties": {
                "id": {
                    "type": ["string", "null"],
                    "description": "The log position to go on from (null: log unreachable)",
                },
                "reason": {"type": "string", "enum": ["gap", "unavailable"]},
                "at": {"type": "integer"},
            },
        },
    )
    event = api.add_component(
        "ServerSentEvent",
        {
            "type": "object",
            "description": (
                "One event of the stream, as its lines give it (the item of a text/event-stream, "
                "in OpenAPI 3.2's words): `invalidate` per change; `reset` when the position "
                "asked for is older than the log (drop cached queries, refetch); `forbidden` "
                "when access ends. Comments (`: heartbeat`, at least every 15 s) are not events."
            ),
            "required": ["event", "data"],
            "properties": {
                "event": {"type": "string", "enum": ["invalidate", "reset", "forbidden"]},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {
                        "anyOf": [invalidation, reset, {"type": "object", "maxProperties": 0}]
                    },
                    "description": "JSON: an Invalidation, a Reset, or `{}` (forbidden)",
                },
                "id": {"type": "string", "pattern": "^[0-9]*$"},
                "retry": {"type": "integer", "minimum": 0},
            },
        },
    )
    stream = {
        "description": "The event stream (text/event-stream), one ServerSentEvent after another",
        "content": {"text/event-stream": {"schema": event}},
    }
    # Any text: a position the log no longer holds, or not a position at all, starts the
    # stream with a reset (replay could not be trusted), never an error.
    since = {"type": "string"}
    api.document(
        "streamEvents",
        summary="Server-Sent Events of an organization",
        description=(
            "Invalidations of the organization's data, replayed after `Last-Event-ID` or "
            "`since` before live ones. See docs/protocol.md."
        ),
        tags=["events"],
        parameters=[
            {
                "in": "query",
                "name": "organizationId",
                "required": True,
                "schema": {"type": "string", "format": "uuid"},
            },
            {
                "in": "query",
                "name": "since",
                "required": False,
                "description": (
                    "Replay the events after this position (a query's `cursor`); one the log "
                    "does not hold starts the stream with `event: reset`"
                ),
                "schema": since,
            },
            {
                "in": "header",
                "name": "Last-Event-ID",
                "required": False,
                "description": "Set by EventSource on reconnection; wins over `since`",
                "schema": since,
            },
        ],
        responses={
            "200": stream,
            **error_responses(("400", "401", "403")),
        },
        security=READ,
    )
    api.document(
        "ackEvent",
        summary="Record a client's delivery position",
        description="Per user and client id (`clientId`, else the X-Client-Id header).",
        tags=["events"],
        request_body=api.request_body(EventAck),
        responses=api.responses(
            "200",
            api.json_schema(EventAcked, mode="serialization"),
            ("400", "401", "403", "413", "422"),
        ),
        security=WRITE,
    )
    router.add_api_operation("/events", ["GET"], events, auth=None, operation_id="streamEvents")
    router.add_api_operation("/events/ack", ["POST"], ack, auth=None, operation_id="ackEvent")
    return router
