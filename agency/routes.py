"""Hand-written API routes: identity (/auth) and the REST routes kept from the original API.

The REST routes call the same reactive functions as /api/rx, so they inherit
validation, authorization, caching and invalidation.
"""

from __future__ import annotations

from django.contrib.auth import authenticate, login, logout
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token, rotate_token
from ninja import Router
from pydantic import BaseModel, Field

from reactive import metrics
from reactive.errors import (
    Forbidden,
    InvalidInput,
    MethodNotAllowed,
    NotAuthenticated,
    ReactiveError,
)
from reactive.functions import registry
from reactive.http import check_csrf, error_response, json_body, json_response, query_input, run
from reactive.models import ClientPosition

from .auth import check_login_allowed, record_login_failure

auth_router = Router(tags=["auth"])
rest_router = Router(tags=["rest"])


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=150)
    password: str = Field(min_length=1, max_length=1024)


def user_json(user) -> dict:
    return {
        "id": str(user.pk),
        "username": user.username,
        "email": user.email,
        "displayName": user.display_name,
        "isStaff": user.is_staff,
    }


@auth_router.post("/login", auth=None, response={200: dict, 401: dict, 422: dict, 429: dict})
def login_view(request: HttpRequest) -> HttpResponse:
    """Log in with a username and password; sets the session cookie."""
    try:
        check_csrf(request)
        body = json_body(request)
        try:
            creds = LoginIn.model_validate(body)
        except Exception:
            raise InvalidInput(
                errors=[
                    {"field": "username", "message": "required"},
                    {"field": "password", "message": "required"},
                ]
            ) from None
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


@auth_router.post("/logout", auth=None, response={200: dict})
def logout_view(request: HttpRequest) -> HttpResponse:
    """End the session."""
    try:
        check_csrf(request)
    except ReactiveError as exc:
        return error_response(exc)
    logout(request)
    return json_response({"ok": True})


@auth_router.get("/me", auth=None, response={200: dict, 401: dict})
def me_view(request: HttpRequest) -> HttpResponse:
    """The current user; also hands out the CSRF cookie an SPA needs before logging in."""
    get_token(request)
    if not request.user.is_authenticated:
        return error_response(NotAuthenticated())
    return json_response({"user": user_json(request.user)})


@auth_router.get("/metrics", auth=None, response={200: dict, 401: dict, 403: dict})
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
            "functions": metrics.snapshot(),
            "process": metrics.process_totals(),
            "deliveryPositions": positions,
        }
    )


# --- REST routes ---------------------------------------------------------------------------


def _collection(resource: str):
    def view(request: HttpRequest) -> HttpResponse:
        if request.method == "GET":
            return run(
                registry[f"{resource}.getAll"],
                request,
                lambda: query_input(request, registry[f"{resource}.getAll"]),
                envelope=False,
            )
        return run(
            registry[f"{resource}.create"],
            request,
            lambda: json_body(request),
            envelope=False,
            status=201,
        )

    view.__name__ = f"{resource}_collection"
    return view


def _item(resource: str):
    def view(request: HttpRequest, item_id: str) -> HttpResponse:
        if request.method == "GET":
            get_one = registry.get(f"{resource}.getOne")
            if get_one is None:  # a route declared before its function: refused, not a 500
                return error_response(MethodNotAllowed(f"No {resource}.getOne function."))
            return run(get_one, request, lambda: {"id": item_id}, envelope=False)
        if request.method == "PATCH":
            return run(
                registry[f"{resource}.update"],
                request,
                lambda: {"id": item_id, "data": json_body(request)},
                envelope=False,
            )
        return run(registry[f"{resource}.delete"], request, lambda: {"id": item_id}, envelope=False)

    view.__name__ = f"{resource}_item"
    return view


for _resource in ("agents", "tools"):
    rest_router.add_api_operation(
        f"/{_resource}", ["GET", "POST"], _collection(_resource), auth=None, include_in_schema=False
    )
    rest_router.add_api_operation(
        f"/{_resource}/{{item_id}}",
        ["GET", "PATCH", "DELETE"],
        _item(_resource),
        auth=None,
        include_in_schema=False,
    )
rest_router.add_api_operation(
    "/organizations",
    ["GET", "POST"],
    _collection("organizations"),
    auth=None,
    include_in_schema=False,
)
rest_router.add_api_operation(
    "/organizations/{item_id}", ["GET"], _item("organizations"), auth=None, include_in_schema=False
)
