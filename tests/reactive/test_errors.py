"""The errors of reactive functions (reactive/errors.py): one status and one JSON shape each."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reactive.errors import (
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
from reactive.schema import Input


@pytest.mark.parametrize(
    "error, status, code",
    [
        (ReactiveError, 400, "bad_request"),
        (InvalidInput, 422, "invalid_input"),
        (NotAuthenticated, 401, "not_authenticated"),
        (Forbidden, 403, "forbidden"),
        (NotFound, 404, "not_found"),
        (MethodNotAllowed, 405, "method_not_allowed"),
        (Conflict, 409, "conflict"),
    ],
)
def test_each_error_has_its_status_code_and_a_default_message(error, status, code):
    exc = error()
    assert (exc.status, exc.code) == (status, code)
    assert exc.as_dict() == {"error": {"code": code, "message": exc.default_message}}
    assert exc.default_message.endswith(".")


def test_a_given_message_replaces_the_default():
    exc = NotFound("No such agent.")
    assert exc.message == str(exc) == "No such agent."
    assert exc.as_dict()["error"]["message"] == "No such agent."


def test_field_errors_are_listed_only_when_there_are_some():
    fields = [{"field": "name", "message": "Required."}]
    body = InvalidInput(errors=fields).as_dict()
    assert body == {
        "error": {"code": "invalid_input", "message": "Invalid input.", "fields": fields}
    }
    assert "fields" not in InvalidInput(errors=[]).as_dict()["error"]


def test_django_message_dicts_become_camel_case_fields():
    errors = field_errors({"database_name": ["Too long.", "Bad characters."], "name": ["Taken."]})
    assert errors == [
        {"field": "databaseName", "message": "Too long. Bad characters."},
        {"field": "name", "message": "Taken."},
    ]


class Child(Input):
    first_name: str


class Parent(Input):
    member_list: list[Child]
    max_count: int


def test_pydantic_errors_become_dotted_camel_case_paths():
    with pytest.raises(ValidationError) as caught:
        Parent.model_validate({"memberList": [{"firstName": "a"}, {}], "maxCount": "x"})
    fields = {e["field"] for e in pydantic_errors(caught.value.errors())}
    assert fields == {"memberList.1.firstName", "maxCount"}


def test_pydantic_locations_of_the_body_or_query_are_dropped():
    errors = [
        {"loc": ("body", "page_size"), "msg": "bad"},
        {"loc": ("query",), "msg": "whole input"},
        {"msg": "no location"},
    ]
    assert pydantic_errors(errors) == [
        {"field": "pageSize", "message": "bad"},
        {"field": "__root__", "message": "whole input"},
        {"field": "__root__", "message": "no location"},
    ]
