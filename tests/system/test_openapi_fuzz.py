"""Schemathesis against the live OpenAPI document: no 5xx, responses match their schemas.

A real server (uvicorn, tests/live.py) publishes /api/openapi.json; Schemathesis
reads it as any client would. For every operation it sends generated valid
(positive) and invalid (negative) cases as a member of one organization, with
the Bearer token that the document's ``bearerAuth`` security scheme names;
then its stateful phase (its own CLI and engine) follows the document's links:
organizations created, agents and tools created in them, read, updated and
deleted through the ids the creates returned, messages sent from those agents.

Organizations the fuzzer creates get their own database (a SQLite file in a
temporary directory, or a PostgreSQL database, dropped afterwards).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    ensure_resource_availability,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    use_after_free,
)
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from agency.models import Agent, ApiToken, Membership, Organization, Tool, User
from agency.provisioning import deprovision
from tests.live import LiveServer


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
    response_headers_conformance,
    invalid_input_rejected,
    ignored_auth,  # what the security requirements say is really enforced
]
# The stateful run (positive data) adds the checks that follow a resource over calls.
STATEFUL_CHECKS = [
    *(c for c in CHECKS if c is not invalid_input_rejected),
    use_after_free,
    ensure_resource_availability,
]
# Per operation and mode: 41 operations x 2 modes x 10 = ~800 cases; stateful: scenarios of
# linked calls. FUZZ_EXAMPLES=100 (say) for a deeper run by hand.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
SCENARIOS = 4 * EXAMPLES
TIMEOUT = 10  # seconds per request: a stream that never ends fails instead of hanging

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory):
    data = tmp_path_factory.mktemp("fuzz")
    srv = LiveServer(data, TEAMHUB_DATA_DIR=str(data))  # organizations' SQLite files here
    yield srv
    srv.stop()


def _databases() -> set[str]:
    if connection.vendor != "postgresql":
        return set()
    with connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database")
        return {row[0] for row in cursor.fetchall()}


@pytest.fixture
def world(db, server) -> dict[str, str]:
    """A member's API token in an organization with an agent and a tool (committed)."""
    before = _databases()
    user = User.objects.create_user("fuzzer", password=None)
    org = Organization.objects.create(name="Fuzz", owner=user, database_name="fuzz_org")
    Membership.objects.create(user=user, organization=org, role="owner")
    agent = Agent.objects.create(organization=org, name="a", role="r")
    tool = Tool.objects.create(organization=org, name="t")
    ids = {"organization": str(org.pk), "agent": str(agent.pk), "tool": str(tool.pk)}
    User.objects.create_user("fuzz-joiner", "joiner@fuzz.test")  # for memberships.add
    yield {"token": ApiToken.issue(user, "fuzz")[1], **ids}
    # The PostgreSQL databases the fuzzer's organizations made (never one that was there).
    made = set(Organization.objects.values_list("database_name", flat=True))
    for name in sorted((_databases() - before) & made):
        deprovision(name)


def fuzz_config(world: dict[str, str], **extra: Any) -> dict[str, Any]:
    """Schemathesis' configuration: the token for the document's bearerAuth scheme, and the
    ids of the fuzzer's rows offered for id fields half the time (random ids only ever get
    403 or 404, which would leave the answers to valid calls untested)."""
    half = 0.5
    bindings = [
        ("body.organizationId", "organizations"),
        ("query.organizationId", "organizations"),
        ("body.agentId", "agents"),
        ("query.agentId", "agents"),
        ("body.fromAgentId", "agents"),
        ("body.toAgentId", "agents"),
        ("body.toolIds[*]", "tools"),
        ("body.id", "rows"),
        ("query.id", "rows"),
        ("path.item_id", "rows"),
        ("body.username", "users"),
    ]
    return {
        "auth": {"openapi": {"bearerAuth": {"bearer": world["token"]}}},
        "dictionaries": {
            "organizations": {"values": [world["organization"]]},
            "agents": {"values": [world["agent"]]},
            "tools": {"values": [world["tool"]]},
            "rows": {"values": [world["organization"], world["agent"], world["tool"]]},
            "users": {"values": ["fuzz-joiner"]},
        },
        "parameters": {key: {"dictionary": name, "probability": half} for key, name in bindings},
        "request-timeout": TIMEOUT,
        # A stream is read until its first event or for 1 s: events come only when data
        # changes (a replay from `since` at once), so a valid stream would otherwise take
        # the whole timeout.
        "operations": [
            {"include-operation-id": "streamEvents", "max-stream-events": 1, "request-timeout": 1}
        ],
        **extra,
    }


def load(server: LiveServer, world: dict[str, str]):
    """The live document, as Schemathesis reads it from the server."""
    config = SchemathesisConfig.from_dict(fuzz_config(world))
    return schemathesis.openapi.from_url(server.url + "/api/openapi.json", config=config)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_conforms(server, world, mode):
    ops = [result.ok() for result in load(server, world).get_all_operations()]
    assert len(ops) >= 40
    sent = []
    statuses: dict[int, int] = {}

    for op in ops:

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case):
            response = case.call_and_validate(checks=CHECKS)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            sent.append(case)

        try:
            check()
        except Unsatisfiable:
            # an operation without inputs has no invalid input to send
            assert mode is GenerationMode.NEGATIVE, f"{op.method} {op.path}"
    print(f"schemathesis {mode.value}: {len(sent)} cases over {len(ops)} operations", statuses)
    assert len(sent) >= len(ops) * 2  # generation really ran across the operations
    if mode is GenerationMode.POSITIVE:
        # the token went through securitySchemes, and valid calls were answered
        assert statuses.get(401, 0) < len(sent) // 10, statuses
        assert statuses.get(200, 0) + statuses.get(201, 0) > len(sent) // 4, statuses
        # schema-valid input is valid: the fuzzer's own organizations were created
        assert Organization.objects.exclude(pk=world["organization"]).exists()


def linked(document: dict) -> list[str]:
    """The operationIds the document's links join: creates, and what takes the ids they return."""
    found = set()
    for item in document["paths"].values():
        for op in item.values():
            for response in op["responses"].values():
                for link in response.get("links", {}).values():
                    found |= {op["operationId"], link["operationId"]}
    return sorted(found)


def toml(config: dict[str, Any], prefix: str = "") -> str:
    """`config` as TOML: tables, arrays of tables, and scalar or list values (what
    fuzz_config holds)."""

    def nested(key: str) -> str:
        return f"{prefix}.{json.dumps(key)}" if prefix else json.dumps(key)

    def is_tables(value: Any) -> bool:
        return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)

    plain = {k: v for k, v in config.items() if not isinstance(v, dict) and not is_tables(v)}
    out = [f"[{prefix}]"] if prefix and plain else []
    out += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in plain.items()]
    for key, value in config.items():
        if isinstance(value, dict):
            out.append(toml(value, nested(key)))
        elif is_tables(value):
            for table in value:
                out.append(f"[[{nested(key)}]]")
                out += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in table.items()]
    return "\n".join(out) + "\n"


def test_stateful_links(server, world, tmp_path):
    """Schemathesis' stateful phase, run by its CLI (its engine follows the document's links)."""
    document = httpx.get(server.url + "/api/openapi.json").json()
    operations = linked(document)
    assert {"agentsCreate", "agentsGetOne", "agentsUpdate", "createAgent", "getAgent"} <= set(
        operations
    )
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        toml(
            fuzz_config(
                world,
                generation={"mode": "positive", "database": "none"},
                # the document's own links, not links guessed from names
                phases={"stateful": {"max-steps": 8, "inference": {"algorithms": []}}},
            )
        )
    )
    report = tmp_path / "run.ndjson"
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config),
        "--no-color",
        "run",
        server.url + "/api/openapi.json",
        "--phases",
        "stateful",
        "--checks",
        ",".join(check.__name__ for check in STATEFUL_CHECKS),
        "--max-examples",
        str(SCENARIOS),
        "--workers",
        "1",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
        *[arg for op_id in operations for arg in ("--include-operation-id", op_id)],
    ]
    # (in tmp_path: the CLI keeps a cache in its working directory)
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    print(run.stdout[-3000:])
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-3000:]
    calls, linked_calls = _calls(report)
    print("schemathesis stateful:", dict(sorted(calls.items())))
    # The links were followed: calls built from a link (an id a create returned) succeeded.
    answered = {label.rsplit(" ", 1)[0] for label in linked_calls if label[-3:] in ("200", "201")}
    print("answered through links:", sorted(answered))
    assert len(answered) >= 3, sorted(linked_calls)


def _calls(report: Path) -> tuple[dict[str, int], set[str]]:
    """``"<method> <path template> <status>"``: how often, from the run's NDJSON events; and
    those of the calls that followed a link."""
    calls: dict[str, int] = {}
    linked_calls: set[str] = set()
    for line in report.read_text().splitlines():
        recorder = json.loads(line).get("ScenarioFinished", {}).get("recorder", {})
        for case_id, interaction in recorder.get("interactions", {}).items():
            case = recorder["cases"][case_id]
            value = case["value"]
            label = f"{value['method']} {value['path']} {interaction['response']['status_code']}"
            calls[label] = calls.get(label, 0) + 1
            if case.get("is_transition_applied"):
                linked_calls.add(label)
    return calls, linked_calls
