"""Security: CSRF on every unsafe route, WebSocket origins, API tokens, login throttling,
no cross-organization leak on any function, route or stream, and security headers.

The route and function lists are built from the URL resolver, Ninja's operations,
the reactive registry and the fragment registry, so a new route or function is
covered without editing this file, or makes it fail loudly when it cannot build
its input (extend ID_FIELDS / PLAIN / ROUTE_VALUES then).
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.apps import apps
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.test import AsyncClient, Client
from django.urls import URLResolver, get_resolver

from agency.models import (
    Account,
    Agent,
    ApiToken,
    Cron,
    Membership,
    Message,
    MessageType,
    Organization,
    Tool,
    ToolType,
    User,
    VerificationToken,
)
from reactive.errors import NotFound
from reactive.fragments import QUERY_FRAGMENT, fragments, sign_query
from reactive.functions import registry
from tests.conftest import client_for
from tests.report import record

# Every test runs against Django alone and through the fast lane (tests/conftest.py `lane`).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("lane")]
ROOT = Path(__file__).resolve().parents[2]
WAIT = 5  # seconds any expected frame may take
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")

# --- worlds: an organization with one row of everything, every value a unique secret -----------


def make_world(owner: User, label: str) -> dict[str, Any]:
    """An organization owned by `owner` with an agent, tool, message and job.

    Every name, prompt and text is unique to this world, so finding one of them
    (or one of its ids) in a response of another world's user is a leak.
    """
    tag = uuid.uuid4().hex[:10]

    def secret(what: str) -> str:
        return f"{label}-{what}-{tag}"

    org = Organization.objects.create(
        name=secret("org"),
        owner=owner,
        database_name=f"sec_{label.lower()}_{tag}",
        settings={"s": secret("settings")},
    )
    Membership.objects.create(user=owner, organization=org, role="owner")
    member = User.objects.create_user(secret("member"), f"{secret('member')}@example.test")
    membership = Membership.objects.create(user=member, organization=org, role="member")
    joiner = User.objects.create_user(secret("joiner"))  # belongs nowhere: memberships.add
    agent = Agent.objects.create(
        organization=org,
        name=secret("agent"),
        role=secret("role"),
        system_prompt=secret("prompt"),
        model_settings={"m": secret("modelsettings")},
    )
    tool = Tool.objects.create(
        organization=org,
        name=secret("tool"),
        description=secret("description"),
        config={"c": secret("config")},
    )
    agent.tools.add(tool)
    message = Message.objects.create(
        organization=org,
        from_agent=agent,
        to_agent=agent,
        content=secret("content"),
        metadata={"k": secret("metadata")},
    )
    cron = Cron.objects.create(
        organization=org,
        agent=agent,
        name=secret("cron"),
        schedule="*/5 * * * *",
        payload={"p": secret("payload")},
    )
    ids = {
        "org": str(org.pk),
        "agent": str(agent.pk),
        "tool": str(tool.pk),
        "message": str(message.pk),
        "cron": str(cron.pk),
        "membership": str(membership.pk),
        "owner": str(owner.pk),
        "joiner": joiner.username,
    }
    texts = [
        secret(w)
        for w in (
            "org",
            "settings",
            "agent",
            "role",
            "prompt",
            "modelsettings",
            "tool",
            "description",
            "config",
            "content",
            "metadata",
            "cron",
            "payload",
        )
    ]
    return {
        "ids": ids,
        "secrets": [*texts, owner.username, owner.email, member.username, *ids.values()],
        "owner": owner,
        "org": org,
        "agent": agent,
        "tool": tool,
    }


def leaks(text: str, world: dict[str, Any], given: set[str] = frozenset()) -> list[str]:
    """The secrets of `world` found in `text`, except values the caller itself sent."""
    return [s for s in world["secrets"] if s not in given and s in text]


def unique_user(prefix: str, **extra: Any) -> User:
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    return User.objects.create_user(name, f"{name}@example.test", "pw-" + name, **extra)


# --- the inputs of reactive functions --------------------------------------------------------

# Which row an `id` names, by the function's group ("agents.getOne" -> an agent).
ROW_OF_ID = {
    "organizations": "org",
    "agents": "agent",
    "tools": "tool",
    "messages": "message",
    "crons": "cron",
    "jobs": "cron",
    "memberships": "membership",
}
# Input fields holding ids of rows (a list of them when the kind ends in "*").
ID_FIELDS = {
    "organizationId": "org",
    "agentId": "agent",
    "fromAgentId": "agent",
    "toAgentId": "agent",
    "toolId": "tool",
    "toolIds": "tool*",
    "messageId": "message",
    "cronId": "cron",
    "jobId": "cron",
}
# Every other input field a function may require.
PLAIN: dict[str, Any] = {
    "name": lambda: f"n{uuid.uuid4().hex[:8]}",
    "role": "r",
    "content": "hello",
    "limit": 5,
    "databaseName": lambda: f"sec_new_{uuid.uuid4().hex[:10]}",
    # an external database: creating an organization then provisions nothing on the server
    "databaseUrl": "postgresql://nobody@db.invalid:5432/none",
    "data": {"name": "changed"},
    "schedule": "*/5 * * * *",
}
# Values of one function's fields where PLAIN's would not do: a value, or a callable of `ids`.
FUNCTION_INPUTS: dict[str, dict[str, Any]] = {
    "memberships.add": {"username": lambda ids: ids["joiner"], "role": "member"},
    "memberships.update": {"role": "admin"},
}


def input_fields(fn) -> list[tuple[str, Any]]:
    return [(field.alias or name, field) for name, field in fn.input.model_fields.items()]


def id_fields(fn) -> list[str]:
    """The input fields of `fn` that name rows (and so can name another organization's)."""
    return [alias for alias, _ in input_fields(fn) if alias == "id" or alias in ID_FIELDS]


def row_id(fn, alias: str, ids: dict[str, str]) -> Any:
    if alias == "id":
        kind = ROW_OF_ID.get(fn.name.split(".")[0])
        if kind is None:
            pytest.fail(f"{fn.name}: which row does its 'id' name? Add it to ROW_OF_ID.")
    else:
        kind = ID_FIELDS[alias]
    if kind.endswith("*"):
        return [ids[kind[:-1]]]
    return ids[kind]


def build_input(fn, ids: dict[str, str], overrides: dict[str, dict[str, str]] | None = None):
    """A valid input of `fn` naming the rows `ids` (per field, `overrides` names others).

    Fails loudly for a required field it cannot fill: a new function or field
    must be taught here, so that the security and abuse tests cover it.
    """
    out: dict[str, Any] = {}
    hints = FUNCTION_INPUTS.get(fn.name, {})
    for alias, field in input_fields(fn):
        if alias in hints:
            hint = hints[alias]
            out[alias] = hint(ids) if callable(hint) else copy.deepcopy(hint)
        elif alias == "id" or alias in ID_FIELDS:
            out[alias] = row_id(fn, alias, (overrides or {}).get(alias, ids))
        elif alias in PLAIN:
            value = PLAIN[alias]
            out[alias] = value() if callable(value) else copy.deepcopy(value)
        elif field.is_required():
            pytest.fail(
                f"{fn.name}: no value for its required input {alias!r}; teach "
                "tests/system/test_security.py (ID_FIELDS, PLAIN or FUNCTION_INPUTS) how to build it"
            )
    return out


def given_values(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set().union(*(given_values(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(given_values(v) for v in value)) if value else set()
    return {str(value)}


def call_function(client: Client, fn, body: dict, headers: dict | None = None):
    """Call `fn` over HTTP the way a client would: queries by GET, mutations by POST."""
    headers = headers or {}
    if fn.kind == "query" and all(not isinstance(v, list | dict) for v in body.values()):
        return client.get(f"/api/rx/{fn.name}", body, **headers)
    token = client.cookies["csrftoken"].value if "csrftoken" in client.cookies else ""
    return client.post(
        f"/api/rx/{fn.name}",
        json.dumps(body),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
        **headers,
    )


# --- every URL the project serves ---------------------------------------------------------------


def url_patterns() -> dict[str, Any]:
    """{route: URLPattern} of every URL, admin, API and pages alike."""

    def walk(patterns, prefix=""):
        for p in patterns:
            if isinstance(p, URLResolver):
                yield from walk(p.url_patterns, prefix + str(p.pattern))
            else:
                yield prefix + str(p.pattern), p

    found: dict[str, Any] = {}
    for route, pattern in walk(get_resolver().url_patterns):
        found.setdefault(route, pattern)
    return found


def ninja_methods(pattern) -> set[str] | None:
    """The methods a Ninja path serves (None for a plain Django view)."""
    try:
        path_view = inspect.getclosurevars(pattern.callback).nonlocals.get("self")
    except TypeError:
        return None
    operations = getattr(path_view, "operations", None)
    if operations is None:
        return None
    return {m for op in operations for m in op.methods}


def ninja_function(route: str):
    """The reactive function an /api/rx/<name> route serves, if any."""
    if route.startswith("api/rx/"):
        return registry.get(route.removeprefix("api/rx/"))
    return None


PARAM = re.compile(r"<(?:\w+:)?(?P<name>\w+)>|\(\?P<(?P<rname>\w+)>[^)]*\)")


def concrete(route: str, values: dict[str, Any]) -> str:
    """The path of `route` with its parameters filled from `values` (fails on unknown ones)."""

    def fill(match: re.Match) -> str:
        name = match["name"] or match["rname"]
        if name not in values:
            pytest.fail(f"route {route!r}: no value for {name!r}; extend route_values()")
        return str(values[name])

    return "/" + PARAM.sub(fill, route.replace("^", "").replace("$", ""))


def admin_objects(world: dict[str, Any]) -> dict[str, str]:
    """One object per admin-registered model: `world`'s rows, and rows of global models."""
    tool_type = ToolType.objects.first() or ToolType.objects.create(slug="sec", name="Sec")
    message_type = MessageType.objects.first() or MessageType.objects.create(slug="sec", name="Sec")
    group = Group.objects.get_or_create(name="security-test")[0]
    account = Account.objects.create(
        user=world["owner"], provider="github", provider_account_id=uuid.uuid4().hex
    )
    verification = VerificationToken.issue(world["owner"].email, timedelta(hours=1))[0]
    token = ApiToken.issue(world["owner"], "admin")[0]
    ids = world["ids"]
    return {
        "auth.group": str(group.pk),
        "reactive.functionstats": "agents.getAll",
        "agency.user": ids["owner"],
        "agency.account": str(account.pk),
        "agency.verificationtoken": str(verification.pk),
        "agency.apitoken": str(token.pk),
        "agency.organization": ids["org"],
        "agency.membership": ids["membership"],
        "agency.tooltype": str(tool_type.pk),
        "agency.messagetype": str(message_type.pk),
        "agency.tool": ids["tool"],
        "agency.agent": ids["agent"],
        "agency.message": ids["message"],
        "agency.cron": ids["cron"],
    }


def route_values(route: str, world: dict[str, Any], admin: dict[str, str]) -> dict[str, Any]:
    """Parameter values for `route` naming `world`'s rows."""
    ids = world["ids"]
    values: dict[str, Any] = {
        "org_id": ids["org"],
        "agent_id": ids["agent"],
        "name": "agency.agents",
        "path": "reactive/client.js",
        "app_label": "agency",
        "url": "agency/nothing/",
        "id": ids["owner"],
        "content_type_id": ContentType.objects.get_for_model(Agent).pk,
        "object_id": ids["agent"],
        "membership_id": ids["membership"],
    }
    if route.startswith("api/"):
        resource = route.split("/")[1]
        values["item_id"] = ids[{"agents": "agent", "tools": "tool"}.get(resource, "org")]
        values["name"] = "nothing.here"
    match = re.match(r"admin/(\w+)/(\w+)/", route)
    if match and f"{match[1]}.{match[2]}" in admin:
        values["object_id"] = admin[f"{match[1]}.{match[2]}"]
    return values


def form_data(route: str, world: dict[str, Any]) -> dict[str, Any]:
    """A valid form (or JSON body) for an unsafe request to `route` in `world`."""
    ids = world["ids"]
    owner = world["owner"]
    fn = ninja_function(route)
    if fn is not None:
        return build_input(fn, ids)
    forms = {
        "api/agents": build_input(registry["agents.create"], ids),
        "api/tools": build_input(registry["tools.create"], ids),
        "api/organizations": build_input(registry["organizations.create"], ids),
        "api/agents/<item_id>": {"name": "patched"},
        "api/tools/<item_id>": {"name": "patched"},
        "api/auth/login": {"username": owner.username, "password": "pw-" + owner.username},
        "api/events/ack": {"eventId": "1", "clientId": "security"},
        "login/": {"username": owner.username, "password": "pw-" + owner.username},
        "orgs/<uuid:org_id>/agents/new/": {"name": "new", "role": "r", "temperature": "0.5"},
        "orgs/<uuid:org_id>/tools/new/": {"name": "new", "config": "{}"},
        "orgs/<uuid:org_id>/messages/new/": {"from_agent_id": ids["agent"], "content": "hi"},
        "orgs/<uuid:org_id>/crons/new/": {"agent_id": ids["agent"], "schedule": "0 9 * * *"},
        "agents/<uuid:agent_id>/": {"name": "edited", "role": "r", "temperature": "0.5"},
        "orgs/<uuid:org_id>/members/": {"username": ids["joiner"], "role": "member"},
        "orgs/<uuid:org_id>/members/<uuid:membership_id>/role/": {"role": "admin"},
        "orgs/<uuid:org_id>/settings/": {"name": "renamed", "time_zone": "Europe/Paris"},
    }
    return forms.get(route, {})


def send(client: Client, method: str, path: str, data: dict, csrf: bool, **extra):
    """An unsafe request: JSON for the API, a form elsewhere; with or without the CSRF token."""
    if csrf and "csrftoken" in client.cookies:
        extra["HTTP_X_CSRFTOKEN"] = client.cookies["csrftoken"].value
    if path.startswith("/api/"):
        return client.generic(
            method, path, json.dumps(data), content_type="application/json", **extra
        )
    if method == "POST":
        return client.post(path, data, **extra)
    return client.generic(method, path, "", **extra)


# Models whose rows a refused request may still touch, with the reason.
SNAPSHOT_SKIP = {
    "sessions.session": "a session is saved when its CSRF token is first issued",
    "reactive.functionstats": "metrics are flushed by whatever request comes along",
}


def is_csrf_refusal(resp) -> bool:
    """A 403 for the CSRF check (JSON under /api/, Django's page elsewhere), not another 403."""
    if resp.status_code != 403:
        return False
    if resp.get("Content-Type", "").startswith("application/json"):
        return resp.json()["error"]["code"] == "csrf_failed"
    return b"CSRF verification failed" in resp.content


def snapshot() -> dict[str, list[str]]:
    """Every row of every model (the test database is small)."""
    out = {}
    for model in apps.get_models():
        label = model._meta.label_lower
        if label in SNAPSHOT_SKIP:
            continue
        out[label] = sorted(repr(row) for row in model.objects.values_list())
    return out


def changed(before: dict, after: dict) -> list[str]:
    return [label for label in before if before[label] != after[label]]


# --- (a) CSRF on every cookie-authenticated unsafe route ----------------------------------------

# Unsafe routes that deliberately take cookie-authenticated writes without a CSRF
# token, with the reason. None: login is CSRF-protected too (login CSRF), and
# Bearer-token requests are exempt by design (a browser cannot forge the header).
CSRF_EXEMPT: dict[str, str] = {}

# Unsafe requests that must really succeed with the token (status expected).
MUST_WORK = {
    ("POST", "api/agents"): 201,
    ("POST", "api/tools"): 201,
    ("POST", "api/organizations"): 201,
    ("PATCH", "api/agents/<item_id>"): 200,
    ("DELETE", "api/agents/<item_id>"): 200,
    ("PATCH", "api/tools/<item_id>"): 200,
    ("DELETE", "api/tools/<item_id>"): 200,
    ("POST", "api/auth/login"): 200,
    ("POST", "api/auth/logout"): 200,
    ("POST", "api/events/ack"): 200,
    ("POST", "login/"): 302,
    ("POST", "logout/"): 302,
    ("POST", "orgs/<uuid:org_id>/agents/new/"): 302,
    ("POST", "orgs/<uuid:org_id>/tools/new/"): 302,
    ("POST", "orgs/<uuid:org_id>/messages/new/"): 302,
    ("POST", "orgs/<uuid:org_id>/crons/new/"): 302,
    ("POST", "agents/<uuid:agent_id>/"): 302,
    ("POST", "agents/<uuid:agent_id>/delete/"): 302,
    ("POST", "orgs/<uuid:org_id>/members/"): 302,
    ("POST", "orgs/<uuid:org_id>/members/<uuid:membership_id>/role/"): 302,
    ("POST", "orgs/<uuid:org_id>/members/<uuid:membership_id>/remove/"): 302,
    ("POST", "orgs/<uuid:org_id>/settings/"): 302,
}


def test_every_unsafe_route_needs_the_csrf_token():
    routes = url_patterns()
    # every operation of the OpenAPI document is among the routes enumerated here
    from teamhub.api import api

    schema = api.get_openapi_schema()
    for path, operations in schema["paths"].items():
        route = re.sub(r"\{(\w+)\}", r"<\1>", path.lstrip("/"))
        assert route in routes, f"OpenAPI operation {path} is not in the URL patterns"
        served = ninja_methods(routes[route]) or set()
        assert {m.upper() for m in operations} <= served, path

    user = unique_user("csrf", is_staff=True, is_superuser=True)
    world = make_world(user, "A")
    admin = admin_objects(world)
    refused = worked = 0
    session = client_for(user)  # a refused request changes nothing, the session included
    for route, pattern in sorted(routes.items()):
        if route in CSRF_EXEMPT:
            continue
        served = ninja_methods(pattern)
        exempt_view = getattr(pattern.callback, "csrf_exempt", False)
        path = concrete(route, route_values(route, world, admin))
        before = snapshot()
        for method in UNSAFE:
            resp = send(session, method, path, form_data(route, world), csrf=False)
            if served is not None and method not in served:
                assert resp.status_code in (403, 405), (method, path, resp.status_code)
                continue
            if exempt_view and resp.status_code == 405:
                continue  # a csrf-exempt view checking the token itself, not serving this method
            assert is_csrf_refusal(resp), (method, path, resp.status_code, resp.content[:300])
            if path.startswith("/api/"):
                assert resp["Content-Type"] == "application/json", (method, path)
            refused += 1
        assert changed(before, snapshot()) == [], f"{route}: a refused request changed data"

        # With the token. Admin pages answer PUT/PATCH/DELETE like GET: POST is enough there.
        for method in ("POST",) if route.startswith("admin/") else UNSAFE:
            if served is not None and method not in served:
                continue
            writes = (method, route) in MUST_WORK or ninja_function(route) is not None
            fresh = make_world(user, "A") if writes else world
            path = concrete(route, route_values(route, fresh, admin))
            client = client_for(user) if "log" in route else session  # login/logout: own session
            resp = send(client, method, path, form_data(route, fresh), csrf=True)
            assert not is_csrf_refusal(resp) and resp.status_code < 500, (
                method,
                path,
                resp.status_code,
                resp.content[:300],
            )
            expected = MUST_WORK.get((method, route))
            fn = ninja_function(route)
            if fn is not None and method == "POST":
                expected = 200
            if expected is not None:
                assert resp.status_code == expected, (method, path, resp.content[:300])
                worked += 1
    assert refused > 150 and worked >= len(MUST_WORK)
    print(f"csrf: {refused} unsafe requests refused without the token, {worked} worked with it")


def test_bearer_token_and_session_together_use_the_token_only(alice, org_a):
    """A cookie session plus a bad token is refused; it never falls back to the cookie."""
    client = client_for(alice)
    resp = client.post(
        "/api/rx/agents.create",
        json.dumps({"organizationId": str(org_a.pk), "name": "x", "role": "r"}),
        content_type="application/json",
        HTTP_AUTHORIZATION="Bearer thk_" + "x" * 43,
    )
    assert resp.status_code == 401 and not Agent.objects.exists()


def test_rest_tool_item_is_readable(alice, bob, org_a):
    tool = Tool.objects.create(organization=org_a, name="readable")
    assert client_for(bob).get(f"/api/tools/{tool.pk}").status_code == 403
    resp = client_for(alice).get(f"/api/tools/{tool.pk}")
    assert resp.status_code == 200 and resp.json()["name"] == "readable"


# --- (b) WebSocket origins ----------------------------------------------------------------------


async def ws_connect(origin: bytes | None, *, token: str | None = None, cookie: str | None = None):
    from teamhub.asgi import application

    headers = []
    if origin is not None:
        headers.append((b"origin", origin))
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    comm = WebsocketCommunicator(application, "/ws/reactive/", headers=headers)
    connected, code = await comm.connect(timeout=WAIT)
    if connected:  # a refusal completes the handshake, then closes at once with its code
        await comm.send_json_to({"type": "ping"})
        first = await comm.receive_output(WAIT)
        if first["type"] == "websocket.close":
            return False, first["code"]
        await comm.disconnect()
    return connected, code


@pytest.mark.asyncio
@pytest.mark.usefixtures("hub")
@pytest.mark.parametrize(
    "origin,allowed",
    [
        (b"http://localhost", True),
        (b"http://localhost:8000", True),
        (b"http://127.0.0.1:8000", True),
        (b"HTTP://LOCALHOST", True),
        (b"https://evil.example", False),
        (b"http://localhost.evil.example", False),
        (b"http://127.0.0.1.evil.example", False),
        (b"http://evil.example#@localhost", False),
        (b"null", False),
        (b"", False),
        (b"http://[bad", False),
        (b"\xff\xfe", False),
        (b"http://localhost\x00.evil.example", False),
        (b"x" * 10_000, False),
    ],
)
async def test_websocket_origin(alice, origin, allowed):
    token = (await sync_to_async(ApiToken.issue)(alice, "ws"))[1]
    connected, code = await ws_connect(origin, token=token)
    assert connected is allowed, (origin, code)
    if not allowed:
        assert code == 1008


@pytest.mark.asyncio
@pytest.mark.usefixtures("hub")
async def test_websocket_origin_with_session_cookie(alice, settings):
    client = Client()
    await sync_to_async(client.force_login)(alice)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    assert await ws_connect(b"https://evil.example", cookie=cookie) == (False, 1008)
    assert (await ws_connect(b"http://localhost", cookie=cookie))[0]
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example"]
    assert (await ws_connect(b"https://app.example", cookie=cookie))[0]


# --- (c) API tokens -------------------------------------------------------------------------------


def test_tokens_are_stored_hashed_only(alice):
    row, raw = ApiToken.issue(alice, "stored")
    secret = raw.removeprefix(ApiToken.PREFIX)
    assert row.token_hash != raw and len(row.token_hash) == 64
    from django.db import connection

    with connection.cursor() as cursor:
        for model in apps.get_models():
            table = model._meta.db_table
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 (table names from the models)
            for values in cursor.fetchall():
                assert not any(secret in str(v) for v in values), f"raw token stored in {table}"


def test_revoked_token_is_refused_on_the_next_request(alice, org_a):
    row, raw = ApiToken.issue(alice, "revoke")
    client = Client()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    for _ in range(2):  # the second answer comes from the token cache
        assert client.get("/api/rx/organizations.getAll", **auth).status_code == 200
    assert client.get("/api/events", {"organizationId": str(org_a.pk)}, **auth).status_code == 200
    row.revoke()
    resp = client.get("/api/rx/organizations.getAll", **auth)
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "not_authenticated"
    assert client.get("/api/events", {"organizationId": str(org_a.pk)}, **auth).status_code == 401
    assert client.post("/api/auth/logout", **auth).status_code == 401


def _deactivate(user: User) -> None:
    user.is_active = False
    user.save(update_fields=["is_active", "updated_at"])


async def _sse_frames(response, until: str, timeout: float = WAIT) -> list[str]:
    """SSE frames of a streaming response until one holds `until` (or the stream ends)."""
    frames: list[str] = []
    iterator = response.streaming_content.__aiter__()
    try:
        while True:
            chunk = await asyncio.wait_for(iterator.__anext__(), timeout)
            frames.append(chunk.decode() if isinstance(chunk, bytes) else chunk)
            if until in frames[-1]:
                break
    except StopAsyncIteration:
        pass
    finally:
        await iterator.aclose()
    return frames


@pytest.mark.asyncio
@pytest.mark.usefixtures("hub")
@pytest.mark.parametrize("how", ["revoke", "deactivate"])
async def test_open_sse_stream_ends_when_its_token_goes(alice, org_a, how):
    row, raw = await sync_to_async(ApiToken.issue)(alice, "sse")
    client = AsyncClient()
    resp = await client.get(
        "/api/events", {"organizationId": str(org_a.pk)}, headers={"Authorization": f"Bearer {raw}"}
    )
    assert resp.status_code == 200
    iterator = resp.streaming_content.__aiter__()
    assert b"connected" in await asyncio.wait_for(iterator.__anext__(), WAIT)
    await sync_to_async(row.revoke if how == "revoke" else lambda: _deactivate(alice))()
    frames = []
    try:
        while not any("event: forbidden" in f for f in frames):
            frames.append((await asyncio.wait_for(iterator.__anext__(), WAIT)).decode())
        with pytest.raises(StopAsyncIteration):  # and then the stream ends
            await asyncio.wait_for(iterator.__anext__(), WAIT)
    finally:
        await iterator.aclose()


@pytest.mark.asyncio
@pytest.mark.usefixtures("hub")
@pytest.mark.parametrize("how", ["revoke", "deactivate"])
async def test_open_websocket_closes_when_its_token_goes(alice, org_a, how):
    from teamhub.asgi import application

    row, raw = await sync_to_async(ApiToken.issue)(alice, "ws")
    comm = WebsocketCommunicator(
        application, "/ws/reactive/", headers=[(b"authorization", f"Bearer {raw}".encode())]
    )
    assert (await comm.connect(timeout=WAIT))[0]
    await comm.send_json_to(
        {
            "type": "subscribe",
            "id": "a",
            "name": "agents.getAll",
            "input": {"organizationId": str(org_a.pk)},
        }
    )
    assert (await comm.receive_json_from(WAIT))["type"] == "subscribed"
    await sync_to_async(row.revoke if how == "revoke" else lambda: _deactivate(alice))()
    while True:
        output = await comm.receive_output(WAIT)
        if output["type"] == "websocket.close":
            break
    assert output["code"] in (4401, 1008)


# --- (d) login throttling -------------------------------------------------------------------------


def _login(client: Client, username: str, password: str, address: str = "10.0.0.1"):
    return client.post(
        "/api/auth/login",
        json.dumps({"username": username, "password": password}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value,
        REMOTE_ADDR=address,
    )


def test_login_throttled_per_username_and_address():
    victim = unique_user("victim")
    other = unique_user("other")
    client = client_for(None)
    codes = [_login(client, victim.username, "wrong").status_code for _ in range(11)]
    assert codes == [401] * 10 + [429]
    resp = _login(client, victim.username, "pw-" + victim.username)
    assert resp.status_code == 429 and resp.json()["error"]["code"] == "throttled"
    # the same username from another address, another username from this one: not locked out
    assert _login(client, victim.username, "pw-" + victim.username, "10.0.0.2").status_code == 200
    client = client_for(None)
    assert _login(client, other.username, "pw-" + other.username).status_code == 200
    # case does not open a new window; the login page shares the counter
    assert _login(client_for(None), victim.username.upper(), "x").status_code == 429
    page = client_for(None)
    resp = page.post(
        "/login/",
        {"username": victim.username, "password": "pw-" + victim.username},
        HTTP_X_CSRFTOKEN=page.cookies["csrftoken"].value,
        REMOTE_ADDR="10.0.0.1",
    )
    assert resp.status_code == 200 and "Too many failed logins" in resp.content.decode()
    assert "_auth_user_id" not in page.session


def test_login_throttle_window_ends(monkeypatch):
    from agency import auth

    monkeypatch.setattr(auth, "LOGIN_WINDOW", 1)
    victim = unique_user("window")
    client = client_for(None)
    for _ in range(10):
        _login(client, victim.username, "wrong")
    assert _login(client, victim.username, "wrong").status_code == 429
    import time

    time.sleep(1.5)
    assert _login(client, victim.username, "pw-" + victim.username).status_code == 200


@pytest.mark.parametrize("username", ["a b\x01c", "é" * 150, "x" * 5000, "\x00"])
def test_login_throttle_with_odd_usernames(username):
    client = client_for(None)
    codes = {_login(client, username, "wrong").status_code for _ in range(11)}
    assert codes <= {401, 422, 429} and (422 in codes or 429 in codes)


# --- (e) no cross-organization leak ---------------------------------------------------------------


@pytest.fixture
def worlds(db):
    """Org A (the caller, `outsider`, belongs to it) and org B, which the caller must never see."""
    a_owner = unique_user("aowner")
    b_owner = unique_user("bowner")
    return make_world(a_owner, "A"), make_world(b_owner, "B")


def _callers(a_owner: User) -> dict[str, tuple[Client, dict]]:
    token = ApiToken.issue(a_owner, "cross")[1]
    return {
        "outsider": (client_for(a_owner), {}),
        "token": (Client(enforce_csrf_checks=True), {"HTTP_AUTHORIZATION": f"Bearer {token}"}),
        "anonymous": (client_for(None), {}),
    }


def test_no_function_leaks_another_organization(worlds):
    a, b = worlds
    callers = _callers(a["owner"])
    requests = problems = 0
    failures = []
    before = snapshot()
    for fn in sorted(registry.values(), key=lambda f: f.name):
        fields = id_fields(fn)
        variants = [("all-B", build_input(fn, b["ids"]))]
        # one field at a time naming B, the rest the caller's own organization
        variants += [
            (f"B-{field}", build_input(fn, a["ids"], {field: b["ids"]}))
            for field in fields
            if len(fields) > 1
        ]
        for who, (client, headers) in callers.items():
            for variant, body in variants:
                resp = call_function(client, fn, body, headers)
                requests += 1
                text = resp.content.decode(errors="replace")
                found = leaks(text, b, given_values(body))
                names_b = bool(fields)
                where = f"{who} {fn.name} {variant}: {resp.status_code}"
                if resp.status_code >= 500 or found:
                    problems += 1
                    failures.append(f"{where} leaks {found} {text[:200]}")
                elif who == "anonymous" and resp.status_code != 401:
                    failures.append(f"{where} (expected 401)")
                elif names_b and variant == "all-B" and who != "anonymous":
                    if resp.status_code not in (403, 404):
                        failures.append(f"{where} (expected 403/404) {text[:200]}")
                elif names_b and fn.kind == "mutation" and resp.status_code < 400:
                    failures.append(f"{where}: a write naming B's row succeeded")
    after = snapshot()
    b_rows = [label for label in changed(before, after) if label != "agency.organization"]
    record("cross-org", requests=requests, errors=problems)
    assert failures == []
    # only the caller's own organizations (organizations.create) and rows may have changed
    for label in b_rows:
        for row in set(after[label]) - set(before[label]):
            assert not leaks(row, b), f"{label} gained a row naming org B: {row}"
    for label in before:
        for row in set(before[label]) - set(after[label]):
            assert not leaks(row, b), f"{label}: a row of org B changed or went: {row}"


# Routes outside the cross-organization matrix, with the reason.
CROSS_ORG_SKIP = {
    "api/auth/login": "logging in with org B's owner's password is being that owner",
    "login/": "the same, through the login page",
}


def test_no_route_or_fragment_leaks_another_organization(worlds):
    a, b = worlds
    admin = admin_objects(b)
    routes = url_patterns()
    requests = problems = 0
    failures = []
    before = snapshot()

    def check(who: str, client: Client, method: str, path: str, data: dict, headers: dict):
        nonlocal requests, problems
        if method == "GET":
            resp = client.get(path, data, **headers)
        else:
            resp = send(client, method, path, data, csrf=True, **headers)
        requests += 1
        if getattr(resp, "streaming", False):
            text = ""  # an event stream: covered by the stream tests below
            resp.close()
        else:
            text = resp.content.decode(errors="replace")
        given = given_values(data) | set(re.findall(r"[0-9a-f-]{36}", path))
        found = leaks(text, b, given)
        names_b = bool(given & set(b["ids"].values()))
        where = f"{who} {method} {path} {resp.status_code}"
        if resp.status_code >= 500 or found:
            problems += 1
            failures.append(f"{where} leaks {found}: {text[:200]}")
        elif names_b and resp.status_code < 400 and resp.status_code not in (301, 302):
            failures.append(f"{where}: answered for org B {text[:200]}")
        elif resp.status_code in (301, 302) and names_b:
            location = resp["Location"]
            if "login" not in location and ids_in(location) & set(b["ids"].values()):
                failures.append(f"{where}: redirected into org B ({location})")

    callers = _callers(a["owner"])
    for route, pattern in sorted(routes.items()):
        if route in CROSS_ORG_SKIP:
            continue
        values = route_values(route, b, admin)
        path = concrete(route, values)
        served = ninja_methods(pattern) or {"GET", "POST"}
        for who, (client, headers) in callers.items():
            for method in sorted(served & {"GET", *UNSAFE}):
                if route == "api/events" and method == "GET":
                    data = {"organizationId": b["ids"]["org"]}
                elif route.startswith("api/") and route.rstrip("s").endswith(("agent", "tool")):
                    data = {"organizationId": b["ids"]["org"]} if method == "GET" else {}
                    if method != "GET":
                        data = form_data(route, b)
                elif method == "GET":
                    data = {}
                else:
                    data = form_data(route, b)
                check(who, client, method, path, data, headers)
        # the fragments of pages, each with org B's parameters
    for name, frag in fragments.items():
        params = [p for p in frag.signature.parameters if p != "load"]
        for who, (client, headers) in callers.items():
            if name == QUERY_FRAGMENT:
                for fn in registry.values():
                    if fn.kind != "query" or not id_fields(fn):
                        continue
                    spec = sign_query(fn.name, build_input(fn, b["ids"]), "pages/error.html", "x")
                    check(who, client, "GET", f"/reactive/fragments/{name}", {"s": spec}, headers)
                continue
            data = {p: b["ids"]["org" if p == "organization_id" else "agent"] for p in params}
            check(who, client, "GET", f"/reactive/fragments/{name}", data, headers)
    after = snapshot()
    record("cross-org", requests=requests, errors=problems)
    print("\n".join(failures))
    assert failures == []
    for label in before:
        for row in set(before[label]) - set(after[label]):
            assert not leaks(row, b), f"{label}: a row of org B changed or went: {row}"


def ids_in(text: str) -> set[str]:
    return set(re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text))


@pytest.mark.asyncio
@pytest.mark.usefixtures("hub")
async def test_no_stream_subscription_to_another_organization(worlds):
    from teamhub.asgi import application

    a, b = worlds
    token = (await sync_to_async(ApiToken.issue)(a["owner"], "streams"))[1]
    requests = problems = 0
    # SSE: outsider (session or token) 403, anonymous 401
    session = AsyncClient()
    await sync_to_async(session.force_login)(a["owner"])
    for client, headers, expected in [
        (session, {}, 403),
        (AsyncClient(), {"Authorization": f"Bearer {token}"}, 403),
        (AsyncClient(), {}, 401),
    ]:
        for query in (
            {"organizationId": b["ids"]["org"]},
            {"organizationId": b["ids"]["org"], "since": "1"},
            {"organizationId": b["ids"]["agent"]},  # another id of B: not an organization
        ):
            resp = await client.get("/api/events", query, headers=headers)
            requests += 1
            assert resp.status_code == expected, (query, resp.status_code)
            assert not leaks(resp.content.decode(), b, given_values(query))
    # WebSocket: every query naming B answers an error; anonymous cannot connect
    anonymous = WebsocketCommunicator(application, "/ws/reactive/")
    assert (await anonymous.connect(timeout=WAIT))[0]  # accepted, then closed at once:
    assert await anonymous.receive_output(WAIT) == {"type": "websocket.close", "code": 4401}
    comm = WebsocketCommunicator(
        application, "/ws/reactive/", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    assert (await comm.connect(timeout=WAIT))[0]
    for fn in sorted(registry.values(), key=lambda f: f.name):
        if fn.kind != "query":
            continue
        body = build_input(fn, b["ids"])
        await comm.send_json_to(
            {"type": "subscribe", "id": fn.name, "name": fn.name, "input": body, "data": True}
        )
        reply = await comm.receive_json_from(WAIT)
        requests += 1
        found = leaks(json.dumps(reply), b, given_values(body))
        if found:
            problems += 1
        assert not found, (fn.name, reply)
        if id_fields(fn):
            assert reply["type"] == "error" and reply["status"] in (403, 404), (fn.name, reply)
    await comm.disconnect()
    record("cross-org", requests=requests, errors=problems)


@pytest.mark.asyncio
@pytest.mark.usefixtures("hub")
@pytest.mark.parametrize("writes", ["plain", "links"])
async def test_writes_in_another_organization_reach_no_stream(worlds, writes):
    """A member of A follows every query of A (WebSocket) and A's events (SSE); every
    mutation runs in B; then one write in A. Only that write reaches A's streams.

    "plain" writes no many-to-many links and deletes nothing; "links" also links
    agents to tools and deletes (cascading to the links). The links' table has no
    organization column: its rows must still go to the organization of the rows
    they link, never to the global stream every client follows."""
    from teamhub.asgi import application

    a, b = worlds
    token = (await sync_to_async(ApiToken.issue)(a["owner"], "streams"))[1]
    comm = WebsocketCommunicator(
        application, "/ws/reactive/", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    assert (await comm.connect(timeout=WAIT))[0]
    queries = [fn for fn in registry.values() if fn.kind == "query"]
    for fn in queries:
        await comm.send_json_to(
            {
                "type": "subscribe",
                "id": fn.name,
                "name": fn.name,
                "input": build_input(fn, a["ids"]),
            }
        )
        reply = await comm.receive_json_from(WAIT)
        assert reply["type"] == "subscribed", reply
    client = AsyncClient()
    sse = await client.get(
        "/api/events",
        {"organizationId": a["ids"]["org"]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert sse.status_code == 200
    frames = sse.streaming_content.__aiter__()
    assert b"connected" in await asyncio.wait_for(frames.__anext__(), WAIT)

    def write_everything_in_b() -> int:
        count = 0
        for fn in sorted(registry.values(), key=lambda f: f.name):
            if fn.kind != "mutation" or fn.name.endswith(".delete"):
                continue
            body = build_input(fn, b["ids"])
            if writes == "plain":
                body = {k: v for k, v in body.items() if not isinstance(v, list)}
            try:
                fn.execute(body, user=b["owner"])
                count += 1
            except Exception as exc:  # a write B's owner may not make is no event either
                print(f"{fn.name} in B: {exc!r}")
        for fn in registry.values():
            if writes == "links" and fn.kind == "mutation" and fn.name.endswith(".delete"):
                try:
                    fn.execute(build_input(fn, b["ids"]), user=b["owner"])
                    count += 1
                except NotFound:  # gone with a row deleted before (a cron with its agent)
                    print(f"{fn.name} in B: already deleted")
        return count

    writes = await sync_to_async(write_everything_in_b)()
    assert writes >= 5
    marker = await sync_to_async(Agent.objects.create)(
        organization=a["org"], name="marker", role="r"
    )
    received: list[str] = []
    # WebSocket: frames until the marker's invalidation of agents.getAll
    while True:
        message = await comm.receive_json_from(WAIT)
        received.append(json.dumps(message))
        if message.get("id") == "agents.getAll" and message["type"] == "invalidate":
            break
    while not await comm.receive_nothing(0.3):  # the marker's other invalidations
        received.append(json.dumps(await comm.receive_json_from(WAIT)))
    # SSE: frames until the marker's event
    try:
        while True:
            frame = (await asyncio.wait_for(frames.__anext__(), WAIT)).decode()
            received.append(frame)
            if str(marker.pk) in frame:
                break
    finally:
        await frames.aclose()
    await comm.disconnect()
    found = [(leaks(text, b), text) for text in received]
    leaked = [f"{secrets} in {text!r}" for secrets, text in found if secrets]
    record("cross-org", events=writes, requests=len(received), errors=len(leaked))
    assert leaked == [], "org B's writes reached a stream of org A:\n" + "\n".join(leaked)


# --- (f) security headers --------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.usefixtures("hub")
async def test_security_headers_on_every_kind_of_response(alice, org_a):
    client = AsyncClient(enforce_csrf_checks=True)
    await sync_to_async(client.force_login)(alice)
    responses = {
        "json": await client.get("/api/rx/organizations.getAll"),
        "json error": await client.get("/api/rx/agents.getOne", {"id": "nope"}),
        "404 page": await client.get("/nothing/here/"),
        "page": await client.get(f"/orgs/{org_a.pk}/"),
        "static": await client.get("/static/reactive/client.js"),
        "csrf refusal": await client.post(
            "/api/rx/agents.create", "{}", content_type="application/json"
        ),
        "too large": await client.post(
            "/api/rx/agents.create", "x" * 1_100_000, content_type="application/json"
        ),
        "sse": await client.get("/api/events", {"organizationId": str(org_a.pk)}),
    }
    for kind, resp in responses.items():
        assert resp["X-Content-Type-Options"] == "nosniff", kind
        assert resp["Referrer-Policy"] == "same-origin", kind
        assert "Access-Control-Allow-Origin" not in resp, kind
        if resp.get("Content-Type", "").startswith("text/html"):
            assert resp["X-Frame-Options"] == "DENY", kind
    assert responses["too large"].status_code == 413
    assert responses["csrf refusal"].json()["error"]["code"] == "csrf_failed"
    stream = responses["sse"].streaming_content.__aiter__()
    await stream.aclose()


PRODUCTION_CHECK = """
import json, django
django.setup()
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
client = Client()
plain = client.get("/api/auth/me")
secure = client.get("/api/auth/me", secure=True)
print(json.dumps({
    "redirect": [plain.status_code, plain.get("Location", "")],
    "hsts": secure.get("Strict-Transport-Security", ""),
    "csrf_cookie_secure": bool(secure.cookies["csrftoken"]["secure"]),
    "frame": secure.get("X-Frame-Options", ""),
    "nosniff": secure.get("X-Content-Type-Options", ""),
    "session_secure": __import__("django.conf").conf.settings.SESSION_COOKIE_SECURE,
    "session_httponly": __import__("django.conf").conf.settings.SESSION_COOKIE_HTTPONLY,
}))
"""


def test_production_settings_send_hsts_and_secure_cookies(tmp_path):
    """DEBUG=0: HTTPS redirect, HSTS and secure cookies (check --deploy is in test_settings)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="teamhub.settings",
        DEBUG="0",
        SECRET_KEY="x" * 20 + "-production-only-9f3c1a7e5b2d4c6a8e0f-" + "y" * 20,
        ALLOWED_HOSTS="testserver",
        TEAMHUB_DATA_DIR=str(tmp_path),
    )
    proc = subprocess.run(
        [sys.executable, "-c", PRODUCTION_CHECK],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["redirect"][0] == 301 and found["redirect"][1].startswith("https://")
    assert "max-age=31536000" in found["hsts"] and "includeSubDomains" in found["hsts"]
    assert found["csrf_cookie_secure"] and found["session_secure"] and found["session_httponly"]
    assert found["frame"] == "DENY" and found["nosniff"] == "nosniff"
