"""The API: generated reactive operations, identity, REST routes."""

import logging

from django.core.exceptions import SuspiciousOperation
from ninja.errors import HttpError, ValidationError

from agency import routes
from agency.routes import auth_router, rest_router
from reactive import (
    BadRequest,
    CsrfFailed,
    InvalidInput,
    ReactiveAPI,
    ReactiveError,
    ack_view,
    build_events_router,
    build_router,
    error_response,
    events_view,
    pydantic_errors,
    registry,
)

logger = logging.getLogger("teamhub")

api = ReactiveAPI(
    title="TeamHub API",
    version="1",
    description=(
        "TeamHub's reactive functions (/api/rx), identity (/api/auth), the REST routes "
        "and the event stream. See docs/api.md and docs/protocol.md."
    ),
    urls_namespace="api",
    servers=[{"url": "/", "description": "This server"}],
)
api.add_router("/auth", auth_router)
api.add_router("/rx", build_router(api, registry))
api.add_router("/", rest_router)
api.add_router("/", build_events_router(api, events_view, ack_view))
routes.document(api)
# What a stateful client (or fuzzer) can do with what a create returns, beyond its own id.
for _source, _data, _targets in [
    ("organizationsCreate", "/data", ("agentsCreate", "toolsCreate", "membershipsAdd")),
    ("createOrganization", "", ("createAgent", "createTool", "membershipsAdd")),
]:
    for _target in _targets:
        api.link(
            _source, _target, _target, request_body={"organizationId": f"$response.body#{_data}/id"}
        )
for _source, _data in [("organizationsCreate", "/data"), ("createOrganization", "")]:
    api.link(
        _source,
        "membershipsGetAll",
        "membershipsGetAll",
        parameters={"query.organizationId": f"$response.body#{_data}/id"},
    )
    api.link(
        _source,
        "organizationsGetSettings",
        "organizationsGetSettings",
        parameters={"query.id": f"$response.body#{_data}/id"},
    )
# A membership added can have its role changed, or be removed.
api.crud_links(
    "membershipsAdd",
    "/data",
    None,
    {"membershipsUpdate": "body.id", "membershipsRemove": "body.id"},
)
api.link(
    "agentsCreate",
    "messagesCreate",
    "messagesCreate",
    request_body={
        "organizationId": "$response.body#/data/organizationId",
        "fromAgentId": "$response.body#/data/id",
    },
)
api.tag_docs = {
    "auth": "Session login (cookie + CSRF header) and the current user",
    "agents": "Reactive functions over agents",
    "tools": "Reactive functions over tools",
    "messages": "Reactive functions over messages",
    "organizations": "Reactive functions and REST routes over organizations: name, settings",
    "memberships": "Who belongs to an organization, with which role (owner, admin, member)",
    "toolTypes": "The catalog of tool types (global)",
    "messageTypes": "The catalog of message types (global)",
    "events": "The real-time side: Server-Sent Events and delivery positions",
}


@api.exception_handler(ReactiveError)
def reactive_error(request, exc):
    return error_response(exc)


@api.exception_handler(ValidationError)
def validation_error(request, exc):
    return error_response(InvalidInput(errors=pydantic_errors(exc.errors)))


@api.exception_handler(SuspiciousOperation)
def suspicious(request, exc):
    return error_response(BadRequest())


@api.exception_handler(Exception)
def server_error(request, exc):
    """A bug: logged with its traceback, answered in the one JSON shape without details."""
    logger.exception("unhandled error in %s %s", request.method, request.path)
    error = ReactiveError("Internal server error.")
    error.status, error.code = 500, "server_error"
    return error_response(error)


@api.exception_handler(HttpError)
def http_error(request, exc):
    error = ReactiveError(str(exc))
    error.status = exc.status_code
    return error_response(error)


def csrf_failure(request, reason: str = ""):
    """CSRF_FAILURE_VIEW: the API's JSON error under /api/, Django's page elsewhere.

    Django's middleware refuses unsafe requests to the API's plain Django views
    (the event stream) before they run; their clients read JSON like the rest
    of the API.
    """
    if request.path.startswith("/api/"):
        return error_response(CsrfFailed())
    from django.views.csrf import csrf_failure as page

    return page(request, reason)
