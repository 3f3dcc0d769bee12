"""Schemathesis against our own OpenAPI document: no 5xx, responses match their schemas.

Every operation gets generated cases (valid and invalid inputs) sent through the
WSGI application as a member of one organization, calling with a token.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

from agency.models import Agent, ApiToken, Membership, Organization, Tool, User


@schemathesis.check
def invalid_input_rejected(ctx, response, case):
    """Schemathesis' own check, but 413 (body too large) counts as a rejection too."""
    if response.status_code == 413:
        return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    invalid_input_rejected,
]
EXAMPLES = 12  # per operation and mode: about 24 operations x 2 modes x 12 = ~600 cases


def operations():
    from teamhub.wsgi import application

    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", application)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.fixture
def keep_connection():
    """As Django's test client does: requests must not close the test's connection."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def token(db, keep_connection) -> str:
    user = User.objects.create_user("fuzzer", password=None)
    org = Organization.objects.create(name="Fuzz", owner=user, database_name="fuzz_org")
    Membership.objects.create(user=user, organization=org, role="owner")
    Agent.objects.create(organization=org, name="a", role="r")
    Tool.objects.create(organization=org, name="t")
    return ApiToken.issue(user, "fuzz")[1]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_conforms(token, mode):
    headers = {"Authorization": f"Bearer {token}"}
    ops = operations()
    assert len(ops) >= 20
    sent = []

    for op in ops:

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case):
            case.call_and_validate(headers=headers, checks=CHECKS)
            sent.append(case)

        try:
            check()
        except Unsatisfiable:
            # an operation without inputs has no invalid input to send
            assert mode is GenerationMode.NEGATIVE, f"{op.method} {op.path}"
    print(f"schemathesis {mode.value}: {len(sent)} cases over {len(ops)} operations")
    assert len(sent) >= len(ops) * 2  # generation really ran across the operations
