"""HTTP plumbing (reactive/http.py): one JSON shape, strict JSON bodies, Django's CSRF check."""

from __future__ import annotations

import json

import pytest
from django.test import RequestFactory

from reactive.cache import Lookup
from reactive.errors import InvalidInput, NotFound, ReactiveError
from reactive.functions import Result
from reactive.http import (
    CACHE_HEADER,
    MAX_JSON_DEPTH,
    BadRequest,
    CsrfFailed,
    TooLarge,
    check_csrf,
    error_response,
    json_body,
    json_response,
    parse_json,
    query_input,
    result_response,
)
from tests.testapp.functions import registry

SECRET = "A" * 32  # a CSRF secret: 32 alphanumerics


@pytest.fixture
def rf() -> RequestFactory:
    return RequestFactory()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def fields(exc: ReactiveError) -> list[str]:
    return [f["field"] for f in exc.errors]


def test_json_response_is_compact_utf8_json_with_its_headers():
    response = json_response({"name": "Zoë", "n": [1, 2]}, status=201, headers={"X-A": "b"})
    assert response.status_code == 201 and response["Content-Type"] == "application/json"
    assert response["X-A"] == "b"
    assert response.content.decode() == '{"name":"Zoë","n":[1,2]}'


def test_error_response_has_the_errors_status_and_shape():
    response = error_response(NotFound("No such book."))
    assert response.status_code == 404
    assert json.loads(response.content) == {
        "error": {"code": "not_found", "message": "No such book."}
    }


@pytest.mark.parametrize("raw", ['{"a": 1.5, "b": [true, null, "x"]}', b'{"a": 1.5}'])
def test_parse_json_reads_text_and_bytes(raw):
    assert parse_json(raw)["a"] == 1.5


@pytest.mark.parametrize("raw", ["{", "NaN", '{"a": Infinity}', "-Infinity", b"\xff\xfe", ""])
def test_what_is_not_json_is_a_bad_request(raw):
    with pytest.raises(BadRequest) as caught:
        parse_json(raw)
    assert caught.value.status == 400


def test_a_number_no_float_holds_is_invalid_input():
    with pytest.raises(InvalidInput, match="out of range"):
        parse_json('{"n": 1e400}')


def test_nesting_is_bounded_even_far_past_the_recursion_limit():
    assert isinstance(parse_json(nested(MAX_JSON_DEPTH)), list)  # the limit itself is allowed
    for depth in (MAX_JSON_DEPTH + 1, 100_000):
        with pytest.raises(InvalidInput, match="nested deeper"):
            parse_json(nested(depth))


def test_nul_characters_are_refused_naming_where_they_are():
    with pytest.raises(InvalidInput) as caught:
        parse_json('{"a": {"b": ["ok", "x\\u0000y"]}}')
    assert fields(caught.value) == ["a.b.1"]
    with pytest.raises(InvalidInput) as caught:
        parse_json('{"k\\u0000": 1}')
    assert fields(caught.value) == ["k\\0"]
    assert parse_json('{"a": "\\\\u0000"}') == {"a": "\\u0000"}  # an escaped backslash is no NUL


def test_json_body_is_an_object_or_nothing(rf):
    def post(body: str):
        return rf.post("/x", data=body, content_type="application/json")

    assert json_body(post("")) == {}
    assert json_body(post('{"a": 1}')) == {"a": 1}
    with pytest.raises(InvalidInput) as caught:
        json_body(post("[1]"))
    assert fields(caught.value) == ["__root__"]
    with pytest.raises(BadRequest):
        json_body(post("   "))


def test_a_body_over_the_limit_is_too_large(rf, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10
    request = rf.post("/x", data='{"a": "' + "x" * 20 + '"}', content_type="application/json")
    with pytest.raises(TooLarge) as caught:
        json_body(request)
    assert caught.value.status == 413


def test_safe_methods_need_no_csrf_token(rf):
    for method in ("get", "head", "options", "trace"):
        check_csrf(getattr(rf, method)("/x"))


def test_an_unsafe_request_without_a_token_fails_the_csrf_check(rf):
    with pytest.raises(CsrfFailed) as caught:
        check_csrf(rf.post("/x"))
    assert caught.value.status == 403 and caught.value.code == "csrf_failed"
    request = rf.post("/x", HTTP_X_CSRFTOKEN="B" * 32)
    request.COOKIES["csrftoken"] = SECRET
    with pytest.raises(CsrfFailed):
        check_csrf(request)  # a token that is not the cookie's


def test_an_unsafe_request_with_the_cookies_token_passes(rf):
    request = rf.post("/x", HTTP_X_CSRFTOKEN=SECRET)
    request.COOKIES["csrftoken"] = SECRET
    check_csrf(request)


def test_a_token_authenticated_request_skips_the_csrf_check(rf):
    request = rf.delete("/x")
    request.csrf_processing_done = True  # what a token middleware sets
    check_csrf(request)


def test_a_query_string_is_parsed_leniently_into_the_input(rf):
    fn = registry["testapp.books.byAuthor"]
    parsed = query_input(rf.get("/x", {"authorId": "12"}), fn)
    assert parsed.author_id == 12
    with pytest.raises(InvalidInput) as caught:
        query_input(rf.get("/x", {"authorId": "twelve"}), fn)
    assert fields(caught.value) == ["authorId"]
    with pytest.raises(InvalidInput) as caught:
        query_input(rf.get("/x", {"authorId": "1\x00"}), fn)
    assert fields(caught.value) == ["authorId"]


def test_a_cached_result_is_spliced_into_its_envelope():
    lookup = Lookup(b'{"b":2,"a":1}', "99", hit=True)
    result = Result(key="k", tags=["t"], cursor="99", hit=True, lookup=lookup)
    response = result_response(result)
    assert (
        response.content.decode() == '{"data":{"b":2,"a":1},"key":"k","tags":["t"],"cursor":"99"}'
    )
    assert response[CACHE_HEADER] == "hit" and response["Cache-Control"] == "private, no-cache"
    bare = result_response(Result(value=[1], hit=False), envelope=False)
    assert bare.content == b"[1]" and bare[CACHE_HEADER] == "miss"
