"""Hand-written API routes: identity (/auth) and the REST routes kept from the original API.

The REST routes call the same reactive functions as /api/rx, so they inherit
validation, authorization, caching and invalidation.
"""

from __future__ import annotations

from django.contrib.auth import authenticate, login, logout
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token, rotate_token
from ninja import Router
from pydantic import ValidationError

from reactive import (
    CACHE_HEADERS,
    ClientPosition,
    Forbidden,
    InvalidInput,
    MethodNotAllowed,
    NotAuthenticated,
    ReactiveAPI,
    ReactiveError,
    Route,
    check_csrf,
    error_response,
    json_body,
    json_response,
    metrics_snapshot,
    process_totals,
    pydantic_errors,
    query_input,
    registry,
)
from reactive import LOGIN_SECURITY as ANONYMOUS_WRITE
from reactive import READ_SECURITY as READ
from reactive import WRITE_SECURITY as WRITE
from reactive import request_context as context
from reactive import run_function as run

from . import schemas
from .auth import check_login_allowed, record_login_failure

auth_router = Router(tags=["auth"])
rest_router = Router(tags=["rest"])


def user_json(user) -> dict:
    return {
        "id": str(user.pk),
        "username": user.username,
        "email": user.email,
        "displayName": user.display_name,
        "isStaff": user.is_staff,
    }


@auth_router.post("/login", auth=None, operation_id="login")
def login_view(request: HttpRequest) -> HttpResponse:
    """Log in with a username and password; sets the session cookie."""
    try:
        check_csrf(request)
        body = json_body(request)
        try:
            creds = schemas.Credentials.model_validate(body)
        except ValidationError as exc:
            raise InvalidInput(errors=pydantic_errors(exc.errors())) from None
        check_login_allowed(request, creds.username)
        user = authenticate(request, username=creds.username, password=creds.password)
        if user is None:
            record_login_failure(request, creds.username)
            raise NotAuthenticated("Invalid username or password.")
    except ReactiveError as exc:
        return error_response(exc)
    login(request, user)
    rotate_token(request)
    return json_response({"user": user_json(user)})


@auth_router.post("/logout", auth=None, operation_id="logout")
def logout_view(request: HttpRequest) -> HttpResponse:
    """End the session."""
    try:
        check_csrf(request)
    except ReactiveError as exc:
        return error_response(exc)
    logout(request)
    return json_response({"ok": True})


@auth_router.get("/me", auth=None, operation_id="getMe")
def me_view(request: HttpRequest) -> HttpResponse:
    """The current user; also hands out the CSRF cookie an SPA needs before logging in."""
    get_token(request)
    if not request.user.is_authenticated:
        return error_response(NotAuthenticated())
    return json_response({"user": user_json(request.user)})


@auth_router.get("/metrics", auth=None, operation_id="getMetrics")
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Reactive function metrics (staff only)."""
    if not request.user.is_authenticated:
        return error_response(NotAuthenticated())
    if not request.user.is_staff:
        return error_response(Forbidden())
    positions = [
        {
            "user": p.user.username,
            "clientId": p.client_id,
            "organizationId": p.tenant,
            "eventId": p.event_id,
            "at": p.updated_at.isoformat(),
        }
        for p in ClientPosition.objects.select_related("user").order_by("-updated_at")[:200]
    ]
    return json_response(
        {
            "functions": metrics_snapshot(),
            "process": process_totals(),
            "deliveryPositions": positions,
        }
    )


# --- REST routes ---------------------------------------------------------------------------

# resource -> (singular, for operationIds; the methods of its item route)
RESOURCES = {
    "agents": ("Agent", ("GET", "PATCH", "DELETE")),
    "tools": ("Tool", ("GET", "PATCH", "DELETE")),
    "organizations": ("Organization", ("GET",)),
}
VERBS = {
    ("collection", "GET"): ("list", "getAll"),
    ("collection", "POST"): ("create", "create"),
    ("item", "GET"): ("get", "getOne"),
    ("item", "PATCH"): ("update", "update"),
    ("item", "DELETE"): ("delete", "delete"),
}


def rest_operation_id(resource: str, route: str, method: str) -> str:
    """``listAgents``, ``createAgent``, ``getAgent``, ``updateAgent``, ``deleteAgent``."""
    singular = RESOURCES[resource][0]
    verb = VERBS[(route, method)][0]
    return verb + (singular + "s" if verb == "list" else singular)


def _patch(request: HttpRequest, resource: str, item_id: str) -> HttpResponse:
    """PATCH: the body is the update's ``data``, so its field errors are named as in the body."""
    try:
        check_csrf(request)
        result = registry[f"{resource}.update"].call(
            {"id": item_id, "data": json_body(request)}, context(request)
        )
    except InvalidInput as exc:
        exc.errors = [{**e, "field": e["field"].removeprefix("data.")} for e in exc.errors]
        return error_response(exc)
    except ReactiveError as exc:
        return error_response(exc)
    return json_response(result.data)


def _rest_view(resource: str, route: str, method: str):
    function = f"{resource}.{VERBS[(route, method)][1]}"

    def collection(request: HttpRequest) -> HttpResponse:
        fn = registry[function]
        if method == "GET":
            return run(fn, request, lambda: query_input(request, fn), envelope=False)
        return run(fn, request, lambda: json_body(request), envelope=False, status=201)

    def item(request: HttpRequest, item_id: str) -> HttpResponse:
        fn = registry.get(function)
        if fn is None:  # a route declared before its function: refused, not a 500
            return error_response(MethodNotAllowed(f"No {function} function."))
        if method == "PATCH":
            return _patch(request, resource, item_id)
        return run(fn, request, lambda: {"id": item_id}, envelope=False)

    view = collection if route == "collection" else item
    view.__name__ = rest_operation_id(resource, route, method)
    return view


def fast_routes(prefix: str = "/api/") -> list[Route]:
    """The REST routes that are queries, for the fast lane (teamhub.lane)."""
    out = []
    for resource, (_singular, item_methods) in RESOURCES.items():
        out.append(Route(f"{prefix}{resource}", f"{resource}.getAll", envelope=False))
        if "GET" in item_methods:
            out.append(Route(f"{prefix}{resource}/{{id}}", f"{resource}.getOne", envelope=False))
    return out


for _resource, (_singular, _item_methods) in RESOURCES.items():
    for _method in ("GET", "POST"):
        rest_router.add_api_operation(
            f"/{_resource}",
            [_method],
            _rest_view(_resource, "collection", _method),
            auth=None,
            operation_id=rest_operation_id(_resource, "collection", _method),
        )
    for _method in _item_methods:
        rest_router.add_api_operation(
            f"/{_resource}/{{item_id}}",
            [_method],
            _rest_view(_resource, "item", _method),
            auth=None,
            operation_id=rest_operation_id(_resource, "item", _method),
        )


# --- the OpenAPI document --------------------------------------------------------------------


def document(api: ReactiveAPI) -> None:
    """Describe the auth and REST operations in `api`'s OpenAPI document."""
    session = api.json_schema(schemas.Session, mode="serialization")
    api.document(
        "login",
        summary="Log in",
        description=(
            "With a username and password; sets the session cookie. A browser sends the "
            "X-CSRFToken header (the csrftoken cookie, which GET /api/auth/me sets). "
            "429 after 10 failures in 5 minutes for one username and address."
        ),
        tags=["auth"],
        request_body=api.request_body(schemas.Credentials),
        responses=api.responses("200", session, ("400", "401", "403", "413", "422", "429")),
        security=ANONYMOUS_WRITE,
    )
    api.document(
        "logout",
        summary="Log out",
        description="End the session.",
        tags=["auth"],
        responses=api.responses(
            "200", api.json_schema(schemas.LoggedOut, mode="serialization"), ("403",)
        ),
        security=WRITE,
    )
    api.document(
        "getMe",
        summary="The current user",
        description=(
            "Also sets the csrftoken cookie an SPA needs before logging in (on the 401 too)."
        ),
        tags=["auth"],
        responses=api.responses("200", session, ("401",)),
        security=READ,
    )
    api.document(
        "getMetrics",
        summary="Reactive function metrics (staff only)",
        tags=["auth"],
        responses=api.responses(
            "200", api.json_schema(schemas.Metrics, mode="serialization"), ("401", "403")
        ),
        security=READ,
    )
    item_id = {
        "in": "path",
        "name": "item_id",
        "required": True,
        "description": "The row's id",
        "schema": {"type": "string", "format": "uuid"},
    }
    for resource, (_singular, item_methods) in RESOURCES.items():
        for route, method in [("collection", "GET"), ("collection", "POST")] + [
            ("item", m) for m in item_methods
        ]:
            _document_rest(api, resource, route, method, item_id)
        create = rest_operation_id(resource, "collection", "POST")
        api.crud_links(
            create,
            "",
            None,
            {rest_operation_id(resource, "item", m): "path.item_id" for m in item_methods},
        )


def _document_rest(api: ReactiveAPI, resource: str, route: str, method: str, item_id: dict) -> None:
    fn = registry[f"{resource}.{VERBS[(route, method)][1]}"]
    output = api.json_schema(fn.output, mode="serialization")
    parameters = [item_id] if route == "item" else []
    body = None
    headers = None
    if method == "GET" and route == "collection":
        parameters = api.query_parameters(fn.input)
    if method == "GET":
        headers = CACHE_HEADERS
    if method == "POST":
        body = api.request_body(fn.input)
    if method == "PATCH":
        body = api.request_body(fn.input.model_fields["data"].annotation)
    errors = ("401", "403", "404", "422") if method in ("GET", "DELETE") else None
    responses = api.responses(
        "201" if method == "POST" else "200",
        output,
        errors or ("400", "401", "403", "404", "409", "413", "422"),
        description="Created" if method == "POST" else "OK",
        headers=headers,
    )
    api.document(
        rest_operation_id(resource, route, method),
        summary=f"{method} /api/{resource}{'/{item_id}' if route == 'item' else ''}",
        description=(
            f"The bare result of {fn.name} (no envelope)"
            + (": the body is its `data`." if method == "PATCH" else ".")
        ),
        tags=[resource],
        parameters=parameters,
        request_body=body,
        responses=responses,
        security=READ if method == "GET" else WRITE,
    )
