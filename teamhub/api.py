"""The API: generated reactive operations, identity, REST routes."""

import logging

from django.core.exceptions import SuspiciousOperation
from ninja.errors import HttpError, ValidationError

from agency.routes import auth_router, rest_router
from reactive.api import ReactiveAPI, build_router
from reactive.errors import InvalidInput, ReactiveError, pydantic_errors
from reactive.functions import registry
from reactive.http import BadRequest, CsrfFailed, error_response

logger = logging.getLogger("teamhub")

api = ReactiveAPI(
    title="TeamHub API",
    version="1",
    description="Reactive functions of TeamHub. See docs/api.md.",
    urls_namespace="api",
)
api.add_router("/auth", auth_router)
api.add_router("/rx", build_router(api, registry))
api.add_router("/", rest_router)


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
