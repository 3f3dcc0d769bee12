"""Errors a reactive function raises; each maps to one HTTP status and JSON shape."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypedDict


class FieldError(TypedDict):
    """One invalid field, as the wire's ``error.fields`` lists it."""

    field: str  # a camelCase dotted path ("__root__": the input as a whole)
    message: str


class ReactiveError(Exception):
    """Base of the errors callers see; `status` is the HTTP status it maps to."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str = "", errors: list[FieldError] | None = None):
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or self.default_message
        self.errors = errors or []

    default_message = "Bad request."

    def as_dict(self) -> dict[str, Any]:
        """The JSON body of this error (with its field errors, if any)."""
        body: dict[str, Any] = {"error": {"code": self.code, "message": self.message}}
        if self.errors:
            body["error"]["fields"] = self.errors
        return body


class InvalidInput(ReactiveError):
    """The input does not satisfy the function's schema; `errors` names the fields."""

    status, code, default_message = 422, "invalid_input", "Invalid input."


class NotAuthenticated(ReactiveError):
    """No identity was given."""

    status, code, default_message = 401, "not_authenticated", "Authentication required."


class Forbidden(ReactiveError):
    """The caller is not allowed to do this (not a member of the organization)."""

    status, code, default_message = 403, "forbidden", "You do not have access to this resource."


class NotFound(ReactiveError):
    """No such function or row."""

    status, code, default_message = 404, "not_found", "Not found."


class MethodNotAllowed(ReactiveError):
    """The route does not answer this method."""

    status, code, default_message = 405, "method_not_allowed", "Method not allowed."


class Conflict(ReactiveError):
    """The write conflicts with existing data (a unique name taken)."""

    status, code, default_message = 409, "conflict", "Conflict."


def field_errors(errors: dict[str, list[str]]) -> list[FieldError]:
    """Django's ``ValidationError.message_dict`` as the wire's field list."""
    return [
        {"field": _camel(name), "message": " ".join(str(m) for m in messages)}
        for name, messages in errors.items()
    ]


def pydantic_errors(errors: Iterable[Mapping[str, Any]]) -> list[FieldError]:
    """Pydantic's error list as the wire's field list (camelCase dotted paths)."""
    out: list[FieldError] = []
    for err in errors:
        loc = [str(part) for part in err.get("loc", ()) if part not in ("body", "query")]
        out.append({"field": ".".join(_camel(p) for p in loc) or "__root__", "message": err["msg"]})
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
