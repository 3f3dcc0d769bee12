"""Function inputs (reactive/schema.py): camelCase on the wire, snake_case in Python, strict."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reactive.schema import Input, NoInput


class Page(Input):
    page_size: int
    organization_id: str | None = None


def test_wire_names_are_camel_case_and_python_names_are_accepted_too():
    assert Page.model_validate({"pageSize": 3}).page_size == 3
    assert Page.model_validate({"page_size": 4}).page_size == 4
    dumped = Page(page_size=5, organization_id="o").model_dump(by_alias=True)
    assert dumped == {"pageSize": 5, "organizationId": "o"}


def test_unknown_fields_are_refused():
    with pytest.raises(ValidationError) as caught:
        Page.model_validate({"pageSize": 1, "extra": True})
    assert caught.value.errors()[0]["type"] == "extra_forbidden"


def test_an_input_is_frozen():
    page = Page(page_size=1)
    with pytest.raises(ValidationError):
        page.page_size = 2  # type: ignore[misc]
    assert hash(page) == hash(Page(page_size=1))  # usable as a key


def test_no_input_takes_nothing():
    assert NoInput.model_validate({}) == NoInput()
    with pytest.raises(ValidationError):
        NoInput.model_validate({"anything": 1})
