"""Hostile input: every abuse gets a clear 4xx (or WebSocket close code), never a 500,
and the server answers a normal request correctly right after.

In process through Django's test client (WSGI), the ASGI application and
Channels' communicator; raw-socket abuse (bytes no HTTP client library sends)
through a real uvicorn process (tests/live.py). Counts go to the fault and abuse
report ("hostile input": requests sent, 5xx answers seen).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any
from urllib.parse import quote

import pytest
import websockets
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient, Client

from agency.models import Agent, ApiToken, Cron, Tool
from reactive.functions import registry
from reactive.log import get_log
from tests.asgi import http_scope
from tests.conftest import client_for
from tests.live import LiveServer
from tests.report import record
from tests.system.test_security import build_input, input_fields

# Every test runs against Django alone and through the fast lane (tests/conftest.py `lane`).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("lane")]
WAIT = 5  # seconds any expected answer may take
MIB = 1024 * 1024


class Tally:
    """Requests sent and 5xx answers seen by one test, added to the report at its end."""

    def __init__(self) -> None:
        self.requests = self.errors = 0

    def saw(self, resp: Any) -> Any:
        self.requests += 1
        if resp.status_code >= 500:
            self.errors += 1
        return resp


@pytest.fixture
def tally():
    counts = Tally()
    yield counts
    record("hostile input", requests=counts.requests, errors=counts.errors)


@pytest.fixture
def target(alice, org_a, agent_a):
    """Alice's organization, agent, tool and cron; `ids` as build_input takes them."""
    tool = Tool.objects.create(organization=org_a, name="Tool A")
    ids = {"org": str(org_a.pk), "agent": str(agent_a.pk), "tool": str(tool.pk)}
    cron = Cron.objects.create(organization=org_a, agent=agent_a, schedule="0 9 * * *")
    ids.update(message=str(uuid_of_message(org_a, agent_a)), cron=str(cron.pk), owner=str(alice.pk))
    ids.update(membership=str(org_a.memberships.get(user=alice).pk), joiner="nobody-yet")
    return {"user": alice, "org": org_a, "agent": agent_a, "tool": tool, "ids": ids}


def uuid_of_message(org, agent):
    from agency.models import Message

    return Message.objects.create(organization=org, from_agent=agent, content="m").pk


def healthy(client: Client, target: dict, tally: Tally) -> None:
    """A normal request right after an abuse is answered correctly."""
    resp = tally.saw(client.get("/api/rx/agents.getAll", {"organizationId": str(target["org"].pk)}))
    assert resp.status_code == 200, resp.content[:300]
    assert str(target["agent"].pk) in {a["id"] for a in resp.json()["data"]}


def post_raw(client: Client, path: str, body: bytes | str, method: str = "POST", **extra):
    token = client.cookies["csrftoken"].value if "csrftoken" in client.cookies else ""
    content_type = extra.pop("content_type", "application/json")
    return client.generic(
        method, path, body, content_type=content_type, HTTP_X_CSRFTOKEN=token, **extra
    )


# Every route that reads a JSON body: (method, path template).
JSON_ROUTES = [
    ("POST", "/api/rx/agents.create"),
    ("POST", "/api/rx/agents.getAll"),
    ("POST", "/api/rx/organizations.create"),
    ("POST", "/api/rx/messages.create"),
    ("POST", "/api/agents"),
    ("PATCH", "/api/agents/{agent}"),
    ("PATCH", "/api/tools/{tool}"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/events/ack"),
]


def route_path(template: str, target: dict) -> str:
    return template.format(**target["ids"])


# --- bodies ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,template",
    [
        *JSON_ROUTES,
        ("POST", "/api/auth/logout"),
        ("POST", "/api/rx/no.such"),
        ("POST", "/orgs/{org}/agents/new/"),
        ("POST", "/agents/{agent}/"),
        ("POST", "/login/"),
        ("POST", "/admin/login/"),
    ],
)
def test_oversized_body_is_413(target, tally, method, template):
    client = client_for(target["user"])
    path = route_path(template, target)
    body = b'{"name": "' + b"x" * MIB + b'"}'
    resp = tally.saw(post_raw(client, path, body, method))
    assert resp.status_code == 413, resp.content[:300]
    assert resp.json()["error"]["code"] == "too_large"
    form = tally.saw(
        post_raw(
            client,
            path,
            b"a=" + b"x" * MIB,
            method,
            content_type="application/x-www-form-urlencoded",
        )
    )
    assert form.status_code == 413
    healthy(client, target, tally)


def test_body_at_the_limit_is_read(target, tally):
    """Exactly the limit is not too large: the function answers (the prompt is too long)."""
    client = client_for(target["user"])
    head = json.dumps({"organizationId": target["ids"]["org"], "name": "n", "role": "r"})
    pad = MIB - len(head) - len(', "systemPrompt": ""')
    body = head[:-1] + ', "systemPrompt": "' + "p" * pad + '"}'
    assert len(body) == MIB
    resp = tally.saw(post_raw(client, "/api/rx/agents.create", body))
    assert resp.status_code == 422
    assert resp.json()["error"]["fields"][0]["field"] == "systemPrompt"
    token = ApiToken.issue(target["user"], "big")[1]
    resp = tally.saw(
        Client().post(
            "/api/rx/agents.create",
            body + " ",
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
    )
    assert resp.status_code == 413  # one byte over, with a token (no CSRF) too
    healthy(client, target, tally)


MALFORMED = [
    b"{nope",
    b"{",
    b"}",
    b" ",
    b'{"a": 1} trailing',
    b"{'a': 1}",
    b'{"a": NaN}',
    b'{"a": Infinity}',
    b'{"a": -Infinity}',
    b'{"a": 01}',
    b'{"a": "\x01"}',  # a raw control character inside a string
    b'{"a": "\\x"}',
    b'{"a": "\\ud800"}',
    b'{"a": 1e400}',
    b"9" * 5000,
    b"[1, 2]",
    b"1",
    b"null",
    b'"str"',
    b"true",
]


@pytest.mark.parametrize("method,template", JSON_ROUTES)
def test_malformed_json_is_400_or_422(target, tally, method, template):
    client = client_for(target["user"])
    for body in MALFORMED:
        resp = tally.saw(post_raw(client, route_path(template, target), body, method))
        assert resp.status_code in (400, 422), (body[:30], resp.status_code, resp.content[:300])
        assert resp.json()["error"]["code"] in ("bad_request", "invalid_input")
    healthy(client, target, tally)


INVALID_UTF8 = [b'{"name": "\xff\xfe"}', b"\xc3\x28", b'{"organizationId": "\xed\xa0\x80"}']


@pytest.mark.parametrize("method,template", JSON_ROUTES)
def test_invalid_utf8_body_is_400(target, tally, method, template):
    client = client_for(target["user"])
    for body in INVALID_UTF8:
        resp = tally.saw(post_raw(client, route_path(template, target), body, method))
        # undecodable: 400; an encoded lone surrogate decodes, and the field is refused: 422
        assert resp.status_code in (400, 422), (body, resp.content[:300])
    form = tally.saw(
        post_raw(
            client,
            route_path("/orgs/{org}/agents/new/", target),
            b"name=\xff\xfe&role=r%ff",
            content_type="application/x-www-form-urlencoded",
        )
    )
    assert form.status_code < 500
    healthy(client, target, tally)


def nested(levels: int, kind: str) -> str:
    if kind == "array":
        return "[" * levels + "]" * levels
    return '{"a":' * levels + "1" + "}" * levels


@pytest.mark.parametrize("levels", [33, 1000, 100_000])
@pytest.mark.parametrize("kind", ["array", "object"])
def test_deeply_nested_json_is_refused_without_recursion_error(target, tally, kind, levels):
    client = client_for(target["user"])
    inner = nested(levels, kind)
    org = target["ids"]["org"]
    bodies = {
        "/api/rx/agents.create": (
            f'{{"organizationId": "{org}", "name": "n", "role": "r", "modelSettings": {{"x": {inner}}}}}'
        ),
        "/api/rx/tools.create": f'{{"organizationId": "{org}", "name": "n", "config": {{"x": {inner}}}}}',
        "/api/auth/login": f'{{"username": {inner}, "password": "p"}}',
        "/api/events/ack": f'{{"eventId": {inner}}}',
        "/api/rx/organizations.getAll": inner,
    }
    for path, body in bodies.items():
        resp = tally.saw(post_raw(client, path, body))
        assert resp.status_code == 422, (path, resp.status_code, resp.content[:300])
    assert not Agent.objects.filter(name="n").exists()
    healthy(client, target, tally)


@pytest.mark.parametrize(
    "config",
    ['{"a": NaN}', '{"a": 1e400}', "[" * 100_000 + "]" * 100_000, '{"a": "\\u0000"}'],
    ids=["nan", "inf", "deep", "nul"],
)
def test_tool_form_json_config(target, tally, config):
    client = client_for(target["user"])
    resp = client.post(
        route_path("/orgs/{org}/tools/new/", target),
        {"name": "t", "config": config},
        HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value,
    )
    assert resp.status_code == 422


# --- every field of every function: wrong types, NUL characters, ids that are not ids -----------

WRONG_TYPES: list[Any] = [None, True, 0, -1, 1.5, 10**30, "", "s", [], [1], {}, {"a": 1}]


def nested_fields(fn) -> list[str]:
    """The fields of an update's ``data`` object, as "data.<field>"."""
    data = fn.input.model_fields.get("data")
    if data is None:
        return []
    return [f"data.{f.alias or n}" for n, f in data.annotation.model_fields.items()]


def _mutable_input(fn, target) -> dict:
    return build_input(fn, target["ids"])


def test_wrong_json_types_for_every_field_of_every_function(target, tally):
    """Each field of each function's input, replaced by each JSON type: 422 naming the field
    (or an answer when the value is acceptable), never a 500."""
    client = client_for(target["user"])
    cases = 0
    failures = []
    for fn in sorted(registry.values(), key=lambda f: f.name):
        valid = _mutable_input(fn, target)
        fields = [alias for alias, _ in input_fields(fn)]
        for field in [*fields, *nested_fields(fn)]:
            for value in WRONG_TYPES:
                body = json.loads(json.dumps(valid))
                if field.startswith("data."):
                    body["data"] = {field.removeprefix("data."): value}
                else:
                    body[field] = value
                resp = tally.saw(post_raw(client, f"/api/rx/{fn.name}", json.dumps(body)))
                cases += 1
                if resp.status_code not in (200, 403, 404, 409, 422):
                    failures.append((fn.name, field, value, resp.status_code))
                    continue
                if resp.status_code == 422:
                    named = {f["field"] for f in resp.json()["error"].get("fields", [])}
                    top = field.split(".")[0]
                    last = field.split(".")[-1]
                    assert any(
                        n.split(".")[0] in (top, "__root__") or n.split(".")[-1] == last
                        for n in named
                    ), (
                        fn.name,
                        field,
                        value,
                        named,
                    )
        # a body of the wrong shape altogether
        for body in ([], "x", 1, None):
            resp = tally.saw(post_raw(client, f"/api/rx/{fn.name}", json.dumps(body)))
            assert resp.status_code == 422, (fn.name, body, resp.content[:300])
    for body in [
        {"username": 1, "password": []},
        {"username": {"a": 1}, "password": None},
        {"username": "u" * 10_000, "password": "p"},
    ]:
        resp = tally.saw(post_raw(client_for(None), "/api/auth/login", json.dumps(body)))
        assert resp.status_code == 422, resp.content[:300]
    for value in WRONG_TYPES:
        resp = tally.saw(
            post_raw(client, "/api/events/ack", json.dumps({"eventId": value, "clientId": value}))
        )
        assert resp.status_code in (200, 422), (value, resp.content[:300])
    print(f"wrong types: {cases} cases")
    assert failures == []
    assert cases > 300
    healthy(client, target, tally)


# Update fields whose explicit null passed full_clean (blank=True) and failed at the database.
NULL_IN_UPDATE = {
    ("agents.update", "systemPrompt"),
    ("agents.update", "model"),
    ("agents.update", "modelSettings"),
    ("tools.update", "description"),
    ("tools.update", "config"),
}


@pytest.mark.parametrize("name,field", sorted(NULL_IN_UPDATE))
def test_explicit_null_in_an_update(target, tally, name, field):
    client = client_for(target["user"])
    body = {
        "id": target["ids"]["agent" if name.startswith("agents") else "tool"],
        "data": {field: None},
    }
    resp = post_raw(client, f"/api/rx/{name}", json.dumps(body))
    assert resp.status_code == 422, resp.content[:300]


def _with_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value[:1] + "\x00" + value[1:]
    if isinstance(value, list):
        return [_with_nul(v) for v in value]
    return value


def test_nul_characters_anywhere_are_422(target, tally):
    """NUL in any string or key: PostgreSQL cannot store it, so it is refused in both modes."""
    client = client_for(target["user"])
    org = target["ids"]["org"]
    for fn in sorted(registry.values(), key=lambda f: f.name):
        valid = _mutable_input(fn, target)
        for field, value in valid.items():
            if not isinstance(value, str | list) or value == []:
                continue
            body = {**valid, field: _with_nul(value)}
            resp = tally.saw(post_raw(client, f"/api/rx/{fn.name}", json.dumps(body)))
            assert resp.status_code == 422, (fn.name, field, resp.content[:300])
    objects = [
        (
            "/api/rx/agents.create",
            {"organizationId": org, "name": "n", "role": "r"},
            "modelSettings",
        ),
        ("/api/rx/tools.create", {"organizationId": org, "name": "n"}, "config"),
        (
            "/api/rx/messages.create",
            {"organizationId": org, "fromAgentId": target["ids"]["agent"], "content": "c"},
            "metadata",
        ),
        (
            "/api/rx/crons.create",
            {"organizationId": org, "agentId": target["ids"]["agent"], "schedule": "* * * * *"},
            "payload",
        ),
    ]
    for path, base, field in objects:
        for value in ({"k\x00": 1}, {"k": "v\x00"}, {"k": ["\x00"]}, {"k": {"j": "\x00"}}):
            resp = tally.saw(post_raw(client, path, json.dumps({**base, field: value})))
            assert resp.status_code == 422, (path, value, resp.content[:300])
            assert resp.json()["error"]["fields"][0]["field"].startswith(field)
    for path, body in [
        ("/api/auth/login", {"username": "alice\x00", "password": "x"}),
        ("/api/events/ack", {"eventId": "1", "clientId": "tab\x00"}),
        ("/api/events/ack", {"eventId": "1", "organizationId": "\x00"}),
        ("/api/agents", {"organizationId": org, "name": "a\x00", "role": "r"}),
    ]:
        resp = tally.saw(
            post_raw(client_for(None) if "login" in path else client, path, json.dumps(body))
        )
        assert resp.status_code == 422, (path, resp.content[:300])
    for query in ({"organizationId": "\x00"}, {"organizationId": org, "limit": "5\x00"}):
        resp = tally.saw(client.get("/api/rx/agents.getAll", query))
        assert resp.status_code == 422, resp.content[:300]
    for path in (f"/orgs/{org}/tools/new/", f"/orgs/{org}/agents/new/"):
        resp = tally.saw(
            client.post(
                path,
                {"name": "a\x00b", "role": "r", "temperature": "0.5", "description": "\x00"},
                HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value,
            )
        )
        assert resp.status_code == 422
    names = Agent.objects.values_list("name", "role", "system_prompt")
    assert not any("\x00" in text for row in names for text in row)
    healthy(client, target, tally)


ZERO = "00000000-0000-0000-0000-000000000000"  # a UUID no row has
NOT_IDS = [
    "nope",
    "",
    "0",
    "-1",
    "x" * 10_000,
    "' OR 1=1 --",
    "../../etc/passwd",
    "١٢٣",
    "%00",
    "00000000-0000-0000-0000-00000000000g",
    "{00000000-0000-0000-0000-000000000000}x",
]


def test_ids_that_are_not_ids(target, tally):
    client = client_for(target["user"])
    for fn in sorted(registry.values(), key=lambda f: f.name):
        valid = _mutable_input(fn, target)
        for field in [a for a, _ in input_fields(fn) if a == "id" or a.endswith(("Id", "Ids"))]:
            for bad in [*NOT_IDS, ZERO]:
                value = [bad] if field.endswith("Ids") else bad
                resp = tally.saw(
                    post_raw(client, f"/api/rx/{fn.name}", json.dumps({**valid, field: value}))
                )
                expected = (403, 404, 422) if bad == ZERO else (422,)
                if field == "agentId" and bad == ZERO and fn.kind == "query":
                    expected = (200,)  # a filter on an agent that is not there: nothing
                assert resp.status_code in expected, (fn.name, field, bad[:20], resp.content[:300])
    for bad in [quote(b, safe="") for b in NOT_IDS]:
        for path in (f"/api/agents/{bad}", f"/api/tools/{bad}", f"/api/organizations/{bad}"):
            resp = tally.saw(client.get(path))
            assert resp.status_code in (404, 405, 422), (path[:60], resp.content[:200])
        resp = tally.saw(client.get(f"/agents/{bad}/"))
        assert resp.status_code == 404
    for bad in NOT_IDS:
        resp = tally.saw(client.get("/api/rx/agents.getAll", {"organizationId": bad}))
        assert resp.status_code == 422
        resp = tally.saw(client.get("/reactive/fragments/agency.agents", {"organization_id": bad}))
        assert resp.status_code == 422
    healthy(client, target, tally)


# --- query strings and headers ----------------------------------------------------------------------


def test_oversized_and_odd_query_strings(target, tally):
    client = client_for(target["user"])
    org = target["ids"]["org"]
    checks = [
        ("/api/rx/agents.getAll", {"organizationId": org, "input": "x" * 100_000}, 422),
        ("/api/rx/agents.getAll", {"organizationId": "x" * 100_000}, 422),
        ("/api/rx/agents.getAll", {"organizationId": org, "limit": "9" * 5000}, 422),
        ("/api/rx/agents.getAll", {"organizationId": org, "limit": "1e3"}, 422),
        ("/api/rx/organizations.getAll", {"x" * 10_000: "1"}, 422),
        ("/api/rx/no.such", {"input": "x" * 100_000}, 404),
        ("/api/agents", {"organizationId": "x" * 100_000}, 422),
        ("/api/events", {"organizationId": "x" * 100_000}, 403),
        ("/api/events", {"organizationId": "\x00"}, 403),
        ("/reactive/fragments/agency.agents", {"organization_id": "x" * 100_000}, 422),
        ("/reactive/fragments/reactive.query", {"s": "x" * 100_000}, 422),
        ("/reactive/fragments/reactive.query", {"s": "bad:signature"}, 400),
    ]
    for path, query, expected in checks:
        resp = tally.saw(client.get(path, query))
        assert resp.status_code == expected, (path, str(query)[:60], resp.status_code)
        assert resp["Content-Type"] == "application/json"
    many = "&".join(f"k{i}=1" for i in range(5000))
    resp = tally.saw(client.get(f"/api/rx/agents.getAll?organizationId={org}&{many}"))
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "bad_request"
    repeated = "&".join(f"organizationId={org}" for _ in range(150))
    resp = tally.saw(client.get(f"/api/rx/agents.getAll?{repeated}"))
    assert resp.status_code == 200  # the last one counts, like any query parameter
    healthy(client, target, tally)


def test_invalid_utf8_in_query_strings_and_headers(target, tally):
    client = client_for(target["user"])
    org = target["ids"]["org"]
    token = ApiToken.issue(target["user"], "utf8")[1]
    # WSGI carries raw bytes as latin-1 strings
    for query in (
        "organizationId=\xff\xfe",
        "organizationId=%ff%fe",
        "limit=%c3%28&x=\xed\xa0\x80",
    ):
        resp = tally.saw(client.get("/api/rx/agents.getAll", QUERY_STRING=query))
        assert resp.status_code == 422, (query, resp.content[:200])
        resp = tally.saw(client.get("/api/events", QUERY_STRING=query))
        assert resp.status_code in (400, 403), query
    for header in (
        "Bearer \xff\xfe",
        "Bearer thk_\xff" + "a" * 40,
        "Bearer \x00",
        "\xff",
        "Bearer " + "a" * 100_000,
    ):
        resp = tally.saw(Client().get("/api/rx/organizations.getAll", HTTP_AUTHORIZATION=header))
        assert resp.status_code in (401,), (header[:20], resp.status_code)
    resp = tally.saw(
        client.get(
            "/api/rx/agents.getAll",
            {"organizationId": org},
            HTTP_X_CLIENT_ID="\xff\xfe",
            HTTP_ACCEPT_LANGUAGE="\xff",
            HTTP_LAST_EVENT_ID="\xff",
            HTTP_USER_AGENT="\x00\xff",
        )
    )
    assert resp.status_code == 200
    bad_cookie = Client()
    bad_cookie.cookies["sessionid"] = "\xff\xfe"
    bad_cookie.cookies["csrftoken"] = "\xff" * 64
    assert tally.saw(bad_cookie.get("/api/auth/me")).status_code == 401
    ok = tally.saw(
        Client().get("/api/rx/organizations.getAll", HTTP_AUTHORIZATION=f"Bearer {token}")
    )
    assert ok.status_code == 200
    healthy(client, target, tally)


async def asgi_get(
    path: str, query: bytes, headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes]:
    """One request through the project's ASGI application, with raw bytes where asked."""
    from teamhub.asgi import application

    scope = http_scope("GET", path, query, headers)
    sent: list[dict] = []
    first = True

    async def receive():
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(WAIT * 2)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(application(scope, receive, send), WAIT)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


@pytest.mark.asyncio
@pytest.mark.usefixtures("hub")
async def test_invalid_utf8_through_the_asgi_application(target, tally):
    token = (await sync_to_async(ApiToken.issue)(target["user"], "asgi"))[1]
    auth = (b"authorization", f"Bearer {token}".encode())
    org = target["ids"]["org"].encode()
    cases = [
        ("/api/rx/agents.getAll", b"organizationId=\xff\xfe", [auth], (400, 422)),
        ("/api/rx/agents.getAll", b"organizationId=" + org + b"&x=\xc3\x28", [auth], (200, 400)),
        ("/api/rx/organizations.getAll", b"", [(b"authorization", b"Bearer \xff\xfe")], (401,)),
        ("/api/rx/organizations.getAll", b"", [(b"authorization", b"\xff")], (401,)),
        ("/api/rx/organizations.getAll", b"", [auth, (b"x-client-id", b"\xff\x00")], (200,)),
        ("/api/auth/me", b"", [(b"cookie", b"sessionid=\xff\xfe; csrftoken=\xc3\x28")], (401,)),
        ("/api/events", b"organizationId=\xff", [auth], (400, 403)),
        ("/api/events", b"organizationId=" + org, [auth, (b"last-event-id", b"\xff\xfe")], None),
    ]
    for path, query, headers, expected in cases:
        if expected is None:
            continue  # a stream: covered by the Last-Event-ID tests below
        status, body = await asgi_get(path, query, headers)
        tally.requests += 1
        tally.errors += status >= 500
        assert status in expected, (path, query, headers, status, body[:200])
    status, _ = await asgi_get("/api/rx/agents.getAll", b"organizationId=" + org, [auth])
    assert status == 200


# --- SSE positions --------------------------------------------------------------------------------

BOGUS_POSITIONS = [
    "-1",
    "-99999999999999999999",
    "99999999999999999999999",
    "9" * 10_000,
    "abc",
    "123-0",
    "1795696044560853-0",
    "1.5",
    "1e5",
    "0x10",
    " ",
    "0",
    "１２３",
    "null",
    "[1]",
    "x" * 10_240,
]


async def first_frames(resp, count: int) -> list[str]:
    iterator = resp.streaming_content.__aiter__()
    frames = []
    try:
        for _ in range(count):
            chunk = await asyncio.wait_for(iterator.__anext__(), WAIT)
            frames.append(chunk.decode())
    finally:
        await iterator.aclose()
    return frames


@pytest.mark.asyncio
@pytest.mark.usefixtures("hub")
@pytest.mark.parametrize("how", ["header", "since"])
async def test_sse_with_bogus_positions_starts_with_a_reset(target, tally, how):
    client = AsyncClient()
    await sync_to_async(client.force_login)(target["user"])
    org = target["ids"]["org"]
    for position in BOGUS_POSITIONS:
        query = {"organizationId": org}
        headers = {}
        if how == "header":  # header values are bytes: what a client sends for the UTF-8 text
            headers["Last-Event-ID"] = position.encode().decode("latin-1")
        else:
            query["since"] = position
        resp = await client.get("/api/events", query, headers=headers)
        tally.saw(resp)
        assert resp.status_code == 200, (position[:20], resp.status_code)
        assert resp["Content-Type"] == "text/event-stream"
        connected, reset = await first_frames(resp, 2)
        assert "connected" in connected
        assert "event: reset" in reset, (position[:20], reset)
        reset_id = int(reset.split("id: ", 1)[1].split("\n", 1)[0])
        assert reset_id >= 0
    # a real position replays exactly what came after it
    cursor = await sync_to_async(get_log().position)()
    agent = await sync_to_async(Agent.objects.create)(
        organization=target["org"], name="later", role="r"
    )
    query = {"organizationId": org}
    resp = await client.get(
        "/api/events",
        {**query, "since": cursor} if how == "since" else query,
        headers={"Last-Event-ID": cursor} if how == "header" else {},
    )
    connected, replayed = await first_frames(resp, 2)
    assert "event: invalidate" in replayed and f"agency.agent:id={agent.pk}" in replayed
    client_sync = await sync_to_async(client_for)(target["user"])
    await sync_to_async(healthy)(client_sync, target, tally)


# --- WebSocket ----------------------------------------------------------------------------------------


async def ws(user) -> WebsocketCommunicator:
    from teamhub.asgi import application

    token = (await sync_to_async(ApiToken.issue)(user, "ws"))[1]
    comm = WebsocketCommunicator(
        application, "/ws/reactive/", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    connected, _ = await comm.connect(timeout=WAIT)
    assert connected
    return comm


async def still_answers(comm: WebsocketCommunicator) -> None:
    await comm.send_json_to({"type": "ping"})
    reply = await comm.receive_json_from(WAIT)
    assert reply["type"] == "pong" and int(reply["cursor"]) > 0


async def ws_healthy(target: dict) -> None:
    """A new connection subscribes and is told of a write."""
    comm = await ws(target["user"])
    await comm.send_json_to(
        {
            "type": "subscribe",
            "id": "h",
            "name": "agents.getAll",
            "input": {"organizationId": target["ids"]["org"]},
        }
    )
    assert (await comm.receive_json_from(WAIT))["type"] == "subscribed"
    await sync_to_async(Agent.objects.create)(organization=target["org"], name="health", role="r")
    message = await comm.receive_json_from(WAIT)
    assert message["type"] == "invalidate" and message["id"] == "h"
    await comm.disconnect()


GARBAGE_FRAMES = [
    " ",
    "{nope",
    "null",
    "1",
    '"subscribe"',
    "[]",
    "[{}]",
    "{}",
    '{"type": null}',
    '{"type": 1}',
    '{"type": ["subscribe"]}',
    '{"type": {"a": 1}}',
    '{"type": "launch"}',
    '{"type": "subscribe"}',
    '{"type": "subscribe", "id": 1, "name": "agents.getAll"}',
    '{"type": "subscribe", "id": "", "name": "agents.getAll"}',
    '{"type": "subscribe", "id": "' + "i" * 65 + '", "name": "agents.getAll"}',
    '{"type": "subscribe", "id": "x", "name": null}',
    '{"type": "subscribe", "id": "x", "name": ["agents.getAll"]}',
    '{"type": "subscribe", "id": "x", "name": "agents.create", "input": {}}',
    '{"type": "subscribe", "id": "x", "name": "agents.getAll", "input": "str"}',
    '{"type": "subscribe", "id": "x", "name": "agents.getAll", "input": [1]}',
    '{"type": "subscribe", "id": "x", "name": "agents.getAll", "input": {"organizationId": "\\u0000"}}',
    '{"type": "subscribe", "id": "x", "name": "agents.getAll", "input": {"organizationId": 1e400}}',
    '{"type": "subscribe", "id": "x", "name": "agents.getAll", "input": {"organizationId": NaN}}',
    '{"type": "unsubscribe"}',
    '{"type": "unsubscribe", "id": "never"}',
    '{"type": "ping", "extra": "' + "x" * 60_000 + '"}',
    "\x00",
    "\ud7ff",
]


@pytest.mark.asyncio
@pytest.mark.usefixtures("hub")
async def test_garbage_websocket_frames_get_error_frames(target, tally, settings):
    settings.REACTIVE = {**settings.REACTIVE, "MAX_MESSAGES_PER_SECOND": 10_000}
    comm = await ws(target["user"])
    for frame in ["", *GARBAGE_FRAMES]:
        await comm.send_input({"type": "websocket.receive", "text": frame})
        reply = await comm.receive_json_from(WAIT)
        tally.requests += 1
        assert reply["type"] in ("error", "unsubscribed", "pong"), (frame[:40], reply)
        if reply["type"] == "error":
            assert reply["status"] in (400, 404, 422), (frame[:40], reply)
        await still_answers(comm)
    await comm.disconnect()
    await ws_healthy(target)


@pytest.mark.asyncio
@pytest.mark.usefixtures("hub")
async def test_subscribe_with_wrong_types_for_every_field(target, tally, settings):
    settings.REACTIVE = {**settings.REACTIVE, "MAX_MESSAGES_PER_SECOND": 10_000}
    comm = await ws(target["user"])
    for fn in sorted(registry.values(), key=lambda f: f.name):
        if fn.kind != "query":
            continue
        valid = build_input(fn, target["ids"])
        for field in valid:
            for value in WRONG_TYPES:
                await comm.send_json_to(
                    {
                        "type": "subscribe",
                        "id": "w",
                        "name": fn.name,
                        "input": {**valid, field: value},
                    }
                )
                reply = await comm.receive_json_from(WAIT)
                tally.requests += 1
                assert reply["type"] in ("subscribed", "error"), reply
                if reply["type"] == "error":
                    assert reply["status"] in (403, 404, 422), (fn.name, field, value, reply)
        for since in (-1, "abc", [1], {"a": 1}, 1.5, "9" * 5000, None, True):
            await comm.send_json_to(
                {"type": "subscribe", "id": "s", "name": fn.name, "input": valid, "since": since}
            )
            reply = await comm.receive_json_from(WAIT)
            assert reply["type"] == "subscribed", (since, reply)
            if since is not None:
                assert (await comm.receive_json_from(WAIT))["type"] in ("reset", "invalidate")
    await still_answers(comm)
    await comm.disconnect()


@pytest.mark.asyncio
@pytest.mark.usefixtures("hub")
async def test_deeply_nested_websocket_frame_gets_an_error(target, tally):
    comm = await ws(target["user"])
    await comm.send_to(text_data="[" * 30_000 + "]" * 30_000)
    reply = await comm.receive_json_from(2)  # the consumer answers at once, or has died
    assert reply["type"] == "error" and reply["status"] in (400, 422)
    await still_answers(comm)
    await comm.disconnect()


@pytest.mark.asyncio
@pytest.mark.usefixtures("hub")
async def test_unsubscribe_with_an_unhashable_id(target, tally):
    comm = await ws(target["user"])
    await comm.send_to(text_data='{"type": "unsubscribe", "id": [1]}')
    reply = await comm.receive_json_from(WAIT)
    assert reply["type"] == "error" and reply["status"] in (400, 422)
    await still_answers(comm)
    await comm.disconnect()


@pytest.mark.asyncio
@pytest.mark.usefixtures("hub")
@pytest.mark.parametrize(
    "frame,code",
    [
        ({"text_data": json.dumps({"type": "ping", "pad": "x" * 70_000})}, 1009),
        ({"text_data": "x" * (64 * 1024 + 1)}, 1009),
        ({"bytes_data": b"\x00\x01"}, 1008),
        ({"bytes": b""}, 1008),
        ({"bytes_data": b"\xff" * 100_000}, 1008),
        ({"bytes_data": json.dumps({"type": "ping"}).encode()}, 1008),
    ],
    ids=[
        "oversized json",
        "oversized text",
        "binary",
        "empty binary",
        "big binary",
        "json as binary",
    ],
)
async def test_oversized_and_binary_frames_close(target, tally, frame, code):
    comm = await ws(target["user"])
    if "bytes" in frame:  # the communicator refuses to send an empty frame itself
        await comm.send_input({"type": "websocket.receive", **frame})
    else:
        await comm.send_to(**frame)
    closed = await comm.receive_output(WAIT)
    tally.requests += 1
    assert closed["type"] == "websocket.close" and closed["code"] == code
    await ws_healthy(target)


@pytest.mark.asyncio
@pytest.mark.usefixtures("hub")
async def test_oversized_multibyte_frame_closes(target, tally):
    comm = await ws(target["user"])
    await comm.send_to(
        text_data=json.dumps({"type": "ping", "pad": "€" * 30_000}, ensure_ascii=False)
    )
    closed = await comm.receive_output(WAIT)
    assert closed["type"] == "websocket.close" and closed["code"] == 1009


@pytest.mark.asyncio
@pytest.mark.usefixtures("hub")
async def test_subscribe_flood_is_rate_limited_and_capped(target, tally):
    comm = await ws(target["user"])
    org = target["ids"]["org"]
    flood = 400
    for i in range(flood):
        await comm.send_json_to(
            {
                "type": "subscribe",
                "id": f"f{i}",
                "name": "tools.getAll",
                "input": {"organizationId": org},
            }
        )
    replies = [await comm.receive_json_from(WAIT) for _ in range(flood)]
    tally.requests += flood
    subscribed = [r for r in replies if r["type"] == "subscribed"]
    refused = [r for r in replies if r["type"] == "error"]
    assert len(subscribed) == 100  # MAX_SUBSCRIPTIONS, however fast they come
    assert len(subscribed) + len(refused) == flood
    assert {r["status"] for r in refused} == {429}
    codes = {r["error"]["code"] for r in refused}
    assert codes <= {"rate_limited", "too_many_subscriptions"} and codes
    await asyncio.sleep(0.1)  # the bucket refills
    await still_answers(comm)
    # a re-subscription of a live id is not a new subscription
    await comm.send_json_to(
        {"type": "subscribe", "id": "f0", "name": "tools.getAll", "input": {"organizationId": org}}
    )
    assert (await comm.receive_json_from(WAIT))["type"] == "subscribed"
    await comm.send_json_to(
        {"type": "subscribe", "id": "new", "name": "tools.getAll", "input": {"organizationId": org}}
    )
    reply = await comm.receive_json_from(WAIT)
    assert reply["status"] == 429 and reply["error"]["code"] == "too_many_subscriptions"
    # the capped connection still hears its subscriptions
    await sync_to_async(Tool.objects.create)(organization=target["org"], name="flooded")
    message = await comm.receive_json_from(WAIT)
    assert message["type"] == "invalidate"
    await comm.disconnect()
    await ws_healthy(target)


@pytest.mark.asyncio
@pytest.mark.usefixtures("hub")
async def test_ping_flood_is_rate_limited_then_recovers(target, tally):
    comm = await ws(target["user"])
    for _ in range(1000):
        await comm.send_to(text_data='{"type":"ping"}')
    replies = [await comm.receive_json_from(WAIT) for _ in range(1000)]
    tally.requests += 1000
    limited = [r for r in replies if r.get("status") == 429]
    assert len(limited) >= 800 and {r["type"] for r in replies} == {"pong", "error"}
    await asyncio.sleep(0.2)
    await still_answers(comm)
    await comm.disconnect()


# --- the ASGI body limit ----------------------------------------------------------------------------


async def run_limited(app_body: list[bytes], headers: list[tuple[bytes, bytes]], limit: int):
    """Drive teamhub.middleware.BodyLimit around a tiny app that reads the whole body."""
    from teamhub.middleware import BodyLimit

    read = []

    async def app(scope, receive, send):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # what Django does: RequestAborted, no answer
            read.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    chunks = list(app_body)
    received = 0

    async def receive():
        nonlocal received
        received += 1
        if chunks:
            body = chunks.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    await asyncio.wait_for(BodyLimit(app, limit=limit)(scope, receive, send), WAIT)
    return sent[0]["status"], sum(map(len, read)), received


@pytest.mark.asyncio
async def test_asgi_body_limit_refuses_before_reading():
    status, read, received = await run_limited(
        [b"x" * 10], [(b"content-length", b"10000000000")], 1000
    )
    assert status == 413 and read == 0 and received == 0  # not one byte read
    status, read, _ = await run_limited(
        [b"x" * 100] * 50, [(b"transfer-encoding", b"chunked")], 1000
    )
    assert status == 413 and read <= 1000  # cut off at the limit
    status, read, _ = await run_limited(
        [b"x" * 100] * 10, [(b"transfer-encoding", b"chunked")], 1000
    )
    assert status == 200 and read == 1000  # at the limit: served
    status, read, _ = await run_limited([b"x" * 10], [(b"content-length", b"10")], 1000)
    assert status == 200 and read == 10


# --- a real server: raw sockets ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory):
    srv = LiveServer(tmp_path_factory.mktemp("hostile"))
    yield srv
    srv.stop()


def raw_request(port: int, data: bytes, timeout: float = WAIT) -> bytes:
    """Send raw bytes; the status line of the answer (b"" if the server just closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while b"\r\n" not in out:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
    return out.split(b"\r\n", 1)[0]


def status_of(line: bytes) -> int:
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


HOST = b"Host: 127.0.0.1\r\n"
RAW_CASES = {
    "invalid utf-8 in the path": b"GET /api/rx/\xff\xfe HTTP/1.1\r\n" + HOST + b"\r\n",
    "percent-encoded invalid utf-8 in the path": b"GET /api/rx/%ff%fe HTTP/1.1\r\n"
    + HOST
    + b"\r\n",
    "same, on a page": b"GET /orgs/%ff/ HTTP/1.1\r\n" + HOST + b"\r\n",
    "same, on a static file": b"GET /static/%ff%00 HTTP/1.1\r\n" + HOST + b"\r\n",
    "invalid utf-8 in the query": b"GET /api/rx/agents.getAll?organizationId=\xff HTTP/1.1\r\n"
    + HOST
    + b"\r\n",
    "percent-encoded, in the query": b"GET /api/rx/agents.getAll?organizationId=%ff HTTP/1.1\r\n"
    + HOST
    + b"\r\n",
    "invalid utf-8 in Authorization": b"GET /api/auth/me HTTP/1.1\r\n"
    + HOST
    + b"Authorization: Bearer \xff\xfe\r\n\r\n",
    "invalid utf-8 in Cookie": b"GET /api/auth/me HTTP/1.1\r\n"
    + HOST
    + b"Cookie: sessionid=\xff\xfe; csrftoken=\xc3\x28\r\n\r\n",
    "invalid utf-8 in a header": b"GET /api/auth/me HTTP/1.1\r\n"
    + HOST
    + b"X-Client-Id: \xff\r\n\r\n",
    "NUL in a header": b"GET /api/auth/me HTTP/1.1\r\n" + HOST + b"X-Client-Id: a\x00b\r\n\r\n",
    "NUL in the path": b"GET /api/\x00 HTTP/1.1\r\n" + HOST + b"\r\n",
    "invalid utf-8 in Host": b"GET /api/auth/me HTTP/1.1\r\nHost: \xff\r\n\r\n",
    "foreign Host": b"GET /api/auth/me HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    "200 KB header": b"GET /api/auth/me HTTP/1.1\r\n"
    + HOST
    + b"X-Big: "
    + b"a" * 200_000
    + b"\r\n\r\n",
    "200 KB path": b"GET /api/" + b"a" * 200_000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
    "Content-Length not a number": b"POST /api/auth/login HTTP/1.1\r\n"
    + HOST
    + b"Content-Length: abc\r\n\r\n",
    "negative Content-Length": b"POST /api/auth/login HTTP/1.1\r\n"
    + HOST
    + b"Content-Length: -1\r\n\r\n",
    "not HTTP": b"\xff\xfe\x00garbage\r\n\r\n",
    "bad method": b"G\xffT / HTTP/1.1\r\n" + HOST + b"\r\n",
}


@pytest.mark.parametrize("case", sorted(RAW_CASES))
def test_raw_http_abuse(server, tally, case, alice, org_a):
    line = raw_request(server.port, RAW_CASES[case])
    tally.requests += 1
    status = status_of(line)
    tally.errors += status >= 500
    assert 400 <= status < 500 or (status == 0 and line == b""), (case, line)
    token = ApiToken.issue(alice, "raw")[1]
    ok = raw_request(
        server.port,
        b"GET /api/rx/agents.getAll?organizationId="
        + str(org_a.pk).encode()
        + b" HTTP/1.1\r\n"
        + HOST
        + b"Authorization: Bearer "
        + token.encode()
        + b"\r\n\r\n",
    )
    assert status_of(ok) == 200, ok


def test_raw_chunked_body_over_the_limit_is_413(server, tally, alice):
    token = ApiToken.issue(alice, "chunked")[1].encode()
    piece = b"x" * 65536
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(32)) + b"0\r\n\r\n"
    line = raw_request(
        server.port,
        b"POST /api/rx/agents.create HTTP/1.1\r\n"
        + HOST
        + b"Authorization: Bearer "
        + token
        + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunks,
    )
    tally.requests += 1
    assert status_of(line) == 413, line


def test_raw_declared_huge_body_is_refused_at_once(server, tally):
    line = raw_request(
        server.port,
        b"POST /api/auth/login HTTP/1.1\r\n"
        + HOST
        + b"Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
        + b"x" * 1000,
        timeout=3,
    )
    tally.requests += 1
    assert status_of(line) == 413, line


def _ws_handshake(port: int, token: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    sock.sendall(
        b"GET /ws/reactive/ HTTP/1.1\r\n" + HOST + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (zero mask, so the payload goes as is)."""
    if len(payload) < 126:
        size = bytes([0x80 | len(payload)])
    elif len(payload) < 65536:
        size = bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    else:
        size = bytes([0x80 | 127]) + len(payload).to_bytes(8, "big")
    return bytes([0x80 | opcode]) + size + b"\x00\x00\x00\x00" + payload


def _close_code(sock: socket.socket) -> int:
    data = b""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        while len(data) >= 2:
            opcode, size = data[0] & 0x0F, data[1] & 0x7F
            start = 2 + {126: 2, 127: 8}.get(size, 0)
            if size >= 126:
                size = int.from_bytes(data[2:start], "big")
            if len(data) < start + size:
                break
            if opcode == 0x8:
                return int.from_bytes(data[start : start + 2], "big")
            data = data[start + size :]
    return 0


@pytest.mark.parametrize(
    "opcode,payload,codes",
    [
        (0x1, b'{"type": "\xff\xfe"}', (1007,)),  # invalid UTF-8 in a text frame
        (0x1, b"\xed\xa0\x80", (1007,)),  # an encoded surrogate
        (0x2, b"\x00\x01", (1008,)),  # binary
        (0x1, b'{"type":"ping","pad":"' + b"x" * 100_000 + b'"}', (1009,)),  # oversized
        (0x0, b"orphan continuation", (1002,)),  # protocol error
        (0x9, b"p" * 200, (1002,)),  # a control frame over 125 bytes
    ],
    ids=["invalid utf-8", "surrogate", "binary", "oversized", "orphan continuation", "big ping"],
)
def test_raw_websocket_abuse(server, tally, alice, opcode, payload, codes):
    token = ApiToken.issue(alice, "rawws")[1]
    with _ws_handshake(server.port, token) as sock:
        sock.sendall(_frame(opcode, payload))
        code = _close_code(sock)
    tally.requests += 1
    assert code in codes, code


@pytest.mark.asyncio
async def test_server_stays_healthy_after_the_abuse(server, alice, org_a):
    """Runs last in this module: a normal client still gets answers, and nothing crashed."""
    token = await sync_to_async(lambda: ApiToken.issue(alice, "after")[1])()
    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(
        server.url.replace("http", "ws") + "/ws/reactive/", additional_headers=headers
    ) as conn:
        await conn.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(conn.recv(), WAIT))["type"] == "pong"
    import httpx

    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=WAIT) as client:
        resp = await client.get("/api/rx/agents.getAll", params={"organizationId": str(org_a.pk)})
        assert resp.status_code == 200
    log = server.log.read_text()
    assert "Internal Server Error" not in log and "Exception in ASGI application" not in log, log[
        -3000:
    ]
