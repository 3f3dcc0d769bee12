"""The HTTP API: envelopes, cache header, identity, CSRF, tokens, authorization, REST routes."""

from __future__ import annotations

import json
import uuid

import pytest
from django.test import Client

from agency.models import Agent, ApiToken, Tool, ToolType
from tests.conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)


def post(client: Client, path: str, body=None, **extra):
    token = client.cookies["csrftoken"].value if "csrftoken" in client.cookies else ""
    return client.post(
        path,
        json.dumps(body if body is not None else {}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
        **extra,
    )


def test_query_envelope_and_cache_header(alice, org_a, agent_a):
    client = client_for(alice)
    first = client.get("/api/rx/agents.getAll", {"organizationId": str(org_a.pk)})
    assert first.status_code == 200 and first["X-Reactive-Cache"] == "miss"
    body = first.json()
    assert set(body) == {"data", "key", "tags", "cursor"}
    assert [a["id"] for a in body["data"]] == [str(agent_a.pk)]
    assert f"agency.agent:organization_id={org_a.pk}" in body["tags"]
    assert int(body["cursor"]) > 0
    second = client.get("/api/rx/agents.getAll", {"organizationId": str(org_a.pk)})
    assert second["X-Reactive-Cache"] == "hit" and second.json()["data"] == body["data"]


def test_query_by_post_body(alice, org_a, agent_a):
    client = client_for(alice)
    resp = post(client, "/api/rx/agents.getAll", {"organizationId": str(org_a.pk), "limit": 1})
    assert resp.status_code == 200 and len(resp.json()["data"]) == 1


def test_mutation_envelope_and_invalidation(alice, org_a, agent_a):
    client = client_for(alice)
    client.get("/api/rx/agents.getAll", {"organizationId": str(org_a.pk)})
    resp = post(
        client, "/api/rx/agents.update", {"id": str(agent_a.pk), "data": {"name": "Renamed"}}
    )
    assert resp.status_code == 200 and resp.json()["data"]["name"] == "Renamed"
    after = client.get("/api/rx/agents.getAll", {"organizationId": str(org_a.pk)})
    assert after["X-Reactive-Cache"] == "miss" and after.json()["data"][0]["name"] == "Renamed"


@pytest.mark.parametrize(
    "body,fields",
    [
        ({"name": "x", "role": "r"}, {"organizationId"}),
        ({"organizationId": "nope", "name": "x", "role": "r"}, {"organizationId"}),
        ({"organizationId": "ORG", "name": "", "role": "r"}, {"name"}),
        ({"organizationId": "ORG", "name": "x" * 201, "role": "r"}, {"name"}),
        (
            {"organizationId": "ORG", "name": "x", "role": "r", "systemPrompt": "p" * 100_001},
            {"systemPrompt"},
        ),
        ({"organizationId": "ORG", "name": "x", "role": "r", "bogus": 1}, {"bogus"}),
    ],
)
def test_invalid_input_is_422_naming_fields(alice, org_a, body, fields):
    body = {k: (str(org_a.pk) if v == "ORG" else v) for k, v in body.items()}
    resp = post(client_for(alice), "/api/rx/agents.create", body)
    assert resp.status_code == 422, resp.content
    named = {f["field"] for f in resp.json()["error"]["fields"]}
    assert fields <= named
    assert not Agent.objects.exists()


@pytest.mark.parametrize("limit", ["0", "201", "abc"])
def test_limit_bounds(alice, org_a, limit):
    resp = client_for(alice).get(
        "/api/rx/agents.getAll", {"organizationId": str(org_a.pk), "limit": limit}
    )
    assert resp.status_code == 422 and resp.json()["error"]["fields"][0]["field"] == "limit"


def test_malformed_json_is_400_and_non_object_is_422(alice):
    client = client_for(alice)
    token = client.cookies["csrftoken"].value
    bad = client.post(
        "/api/rx/agents.create", "{nope", content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
    arr = client.post(
        "/api/rx/agents.create", "[1]", content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    assert arr.status_code == 422


def test_deeply_nested_json_is_rejected(alice, org_a):
    nested: dict = {}
    for _ in range(100):
        nested = {"a": nested}
    resp = post(
        client_for(alice),
        "/api/rx/agents.create",
        {"organizationId": str(org_a.pk), "name": "n", "role": "r", "modelSettings": nested},
    )
    assert resp.status_code == 422


def test_unknown_function_and_missing_row_are_404(alice):
    client = client_for(alice)
    assert client.get("/api/rx/agents.nothing").status_code == 404
    assert post(client, "/api/rx/nothing.here").status_code == 404
    assert client.get("/api/rx/agents.getOne", {"id": str(uuid.uuid4())}).status_code == 404
    assert (
        post(client, "/api/rx/agents.update", {"id": str(uuid.uuid4()), "data": {}}).status_code
        == 404
    )


@pytest.mark.parametrize(
    "method, path, allow",
    [
        ("get", "/api/rx/agents.create", "POST, OPTIONS"),
        ("put", "/api/rx/agents.getAll", "GET, HEAD, POST, OPTIONS"),
        ("delete", "/api/agents", "GET, HEAD, POST, OPTIONS"),
        ("post", "/api/events", "GET, HEAD, OPTIONS"),
        ("get", "/api/events/ack", "POST, OPTIONS"),
        ("get", "/api/auth/login", "POST, OPTIONS"),
    ],
)
def test_wrong_method_is_a_json_405_with_allow(alice, method, path, allow):
    resp = getattr(client_for(alice), method)(path)
    assert resp.status_code == 405
    assert resp["Allow"] == allow
    assert resp.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("path", ["/api/", "/api/nope", "/api/rx/", "/api/openapi.json/x"])
def test_unknown_api_path_is_a_json_404(alice, path):
    for client in (Client(), client_for(alice)):
        resp = client.get(path)
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "not_found"


def test_options_answers_allow_and_head_answers_as_get(alice, org_a, agent_a):
    client = client_for(alice)
    options = client.options("/api/rx/agents.getAll")
    assert options.status_code == 204
    assert options["Allow"] == "GET, HEAD, POST, OPTIONS"
    assert options.content == b""
    query = {"organizationId": str(org_a.pk)}
    get = client.get("/api/rx/agents.getAll", query)
    head = client.head("/api/rx/agents.getAll", query)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head["Content-Type"] == get["Content-Type"]
    assert int(head["Content-Length"]) == len(get.content)
    anonymous = Client().head("/api/auth/me")
    assert anonymous.status_code == 401
    assert anonymous["Content-Type"] == "application/json"


def test_head_on_the_event_stream_opens_no_stream(alice, org_a):
    resp = client_for(alice).head("/api/events", {"organizationId": str(org_a.pk)})
    assert resp.status_code == 200
    assert resp["Content-Type"].startswith("text/event-stream")
    assert not resp.streaming and resp.content == b""


def test_csrf_required_for_session_writes(alice, org_a):
    client = client_for(alice)
    resp = client.post(
        "/api/rx/agents.create",
        json.dumps({"organizationId": str(org_a.pk), "name": "x", "role": "r"}),
        content_type="application/json",
    )
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "csrf_failed"
    assert not Agent.objects.exists()


def test_login_logout_me(alice):
    client = Client(enforce_csrf_checks=True)
    assert client.get("/api/auth/me").status_code == 401
    token = client.cookies["csrftoken"].value
    bad = client.post(
        "/api/auth/login",
        {"username": "alice", "password": "wrong"},
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert bad.status_code == 401
    good = client.post(
        "/api/auth/login",
        {"username": "alice", "password": "pw-alice"},
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert good.status_code == 200 and good.json()["user"]["username"] == "alice"
    assert client.get("/api/auth/me").json()["user"]["username"] == "alice"
    assert post(client, "/api/auth/logout").status_code == 200
    assert client.get("/api/auth/me").status_code == 401


def test_login_throttled_after_repeated_failures(make_user):
    victim = make_user(f"victim{uuid.uuid4().hex[:8]}")  # failures are counted per username
    client = Client(enforce_csrf_checks=True)
    client.get("/api/auth/me")
    token = client.cookies["csrftoken"].value
    codes = [
        client.post(
            "/api/auth/login",
            {"username": victim.username, "password": "wrong"},
            content_type="application/json",
            HTTP_X_CSRFTOKEN=token,
        ).status_code
        for _ in range(11)
    ]
    assert codes[:10] == [401] * 10 and codes[10] == 429
    right = client.post(
        "/api/auth/login",
        {"username": victim.username, "password": f"pw-{victim.username}"},
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert right.status_code == 429  # locked out for the window, even with the right password


def test_bearer_token_auth_no_csrf_and_revocation(alice, org_a):
    row, raw = ApiToken.issue(alice, "script")
    client = Client(enforce_csrf_checks=True)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    listed = client.get("/api/rx/organizations.getAll", **auth)
    assert listed.status_code == 200 and listed.json()["data"][0]["id"] == str(org_a.pk)
    created = client.post(
        "/api/rx/agents.create",
        json.dumps({"organizationId": str(org_a.pk), "name": "t", "role": "r"}),
        content_type="application/json",
        **auth,
    )
    assert created.status_code == 200
    row.refresh_from_db()
    assert row.last_used_at is not None
    row.revoke()
    assert client.get("/api/rx/organizations.getAll", **auth).status_code == 401
    assert (
        client.get("/api/rx/organizations.getAll", HTTP_AUTHORIZATION="Bearer garbage").status_code
        == 401
    )


# --- the authorization matrix ------------------------------------------------------------

OPERATIONS = [
    ("GET", "organizations.getOne", lambda o, a, t: {"id": o}),
    ("GET", "agents.getAll", lambda o, a, t: {"organizationId": o}),
    ("GET", "agents.getOne", lambda o, a, t: {"id": a}),
    ("POST", "agents.create", lambda o, a, t: {"organizationId": o, "name": "n", "role": "r"}),
    ("POST", "agents.update", lambda o, a, t: {"id": a, "data": {"name": "x"}}),
    ("POST", "agents.delete", lambda o, a, t: {"id": a}),
    ("GET", "tools.getAll", lambda o, a, t: {"organizationId": o}),
    ("POST", "tools.create", lambda o, a, t: {"organizationId": o, "name": "n"}),
    ("POST", "tools.update", lambda o, a, t: {"id": t, "data": {"name": "x"}}),
    ("POST", "tools.delete", lambda o, a, t: {"id": t}),
    ("GET", "messages.getAll", lambda o, a, t: {"organizationId": o}),
    (
        "POST",
        "messages.create",
        lambda o, a, t: {"organizationId": o, "fromAgentId": a, "content": "hi"},
    ),
]


@pytest.mark.parametrize(
    "who,expected",
    [
        ("owner", 200),
        ("member", 200),
        ("outsider", 403),
        ("anonymous", 401),
        ("token", 200),
    ],
)
@pytest.mark.parametrize("method,name,make", OPERATIONS, ids=[op[1] for op in OPERATIONS])
def test_authorization_matrix(make_user, make_org, who, expected, method, name, make):
    owner, member, outsider = make_user("owner"), make_user("member"), make_user("outsider")
    org = make_org(owner, member)
    make_org(outsider)
    agent = Agent.objects.create(organization=org, name="a", role="r")
    tool = Tool.objects.create(organization=org, name="t")
    body = make(str(org.pk), str(agent.pk), str(tool.pk))
    extra = {}
    if who == "token":
        client = Client(enforce_csrf_checks=True)
        extra["HTTP_AUTHORIZATION"] = "Bearer " + ApiToken.issue(member, "t")[1]
    else:
        client = client_for({"owner": owner, "member": member, "outsider": outsider}.get(who))
    if method == "GET":
        resp = client.get(f"/api/rx/{name}", body, **extra)
    else:
        resp = post(client, f"/api/rx/{name}", body, **extra)
    assert resp.status_code == expected, resp.content
    if expected != 200:
        assert Agent.objects.filter(pk=agent.pk, name="a").exists()  # nothing changed
        assert Tool.objects.filter(pk=tool.pk, name="t").exists()
        assert "a" not in json.dumps(resp.json().get("data", ""))


def test_organizations_create_makes_caller_owner_and_provisions(alice, settings, tmp_path):
    client = client_for(alice)
    resp = post(
        client, "/api/rx/organizations.create", {"name": "New", "databaseName": "test_org_new1"}
    )
    assert resp.status_code == 200, resp.content
    org = resp.json()["data"]
    mine = client.get("/api/rx/organizations.getAll").json()["data"]
    assert [(o["id"], o["role"]) for o in mine] == [(org["id"], "owner")]
    again = post(
        client, "/api/rx/organizations.create", {"name": "Dup", "databaseName": "test_org_new1"}
    )
    assert again.status_code == 409
    bad = post(client, "/api/rx/organizations.create", {"name": "Bad", "databaseName": "Bad-Name"})
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "databaseName"


def test_messages_filter_by_agent_and_cross_org_agents_rejected(alice, org_a, agent_a, agent_b):
    client = client_for(alice)
    other = Agent.objects.create(organization=org_a, name="other", role="r")
    sent = post(
        client,
        "/api/rx/messages.create",
        {
            "organizationId": str(org_a.pk),
            "fromAgentId": str(agent_a.pk),
            "toAgentId": str(other.pk),
            "content": "hello",
        },
    )
    assert sent.status_code == 200
    cross = post(
        client,
        "/api/rx/messages.create",
        {"organizationId": str(org_a.pk), "fromAgentId": str(agent_b.pk), "content": "x"},
    )
    assert cross.status_code == 422 and cross.json()["error"]["fields"][0]["field"] == "fromAgentId"
    by_other = client.get(
        "/api/rx/messages.getAll", {"organizationId": str(org_a.pk), "agentId": str(other.pk)}
    ).json()
    assert [m["content"] for m in by_other["data"]] == ["hello"]


def test_agent_tools_m2m_through_update(alice, org_a, agent_a):
    client = client_for(alice)
    ToolType.objects.create(slug="http", name="HTTP")
    tool = post(
        client,
        "/api/rx/tools.create",
        {"organizationId": str(org_a.pk), "name": "fetch", "toolType": "http"},
    ).json()["data"]
    assert tool["toolType"] == "http"
    assert (
        client.get("/api/rx/agents.getOne", {"id": str(agent_a.pk)}).json()["data"]["toolIds"] == []
    )
    resp = post(
        client, "/api/rx/agents.update", {"id": str(agent_a.pk), "data": {"toolIds": [tool["id"]]}}
    )
    assert resp.status_code == 200
    after = client.get("/api/rx/agents.getOne", {"id": str(agent_a.pk)})
    assert after["X-Reactive-Cache"] == "miss" and after.json()["data"]["toolIds"] == [tool["id"]]


# --- REST routes ---------------------------------------------------------------------------


def test_rest_routes_backed_by_functions(alice, bob, org_a):
    client = client_for(alice)
    token = client.cookies["csrftoken"].value
    created = client.post(
        f"/api/agents?organizationId={org_a.pk}",
        json.dumps({"organizationId": str(org_a.pk), "name": "r1", "role": "x"}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert created.status_code == 201
    agent_id = created.json()["id"]
    listed = client.get("/api/agents", {"organizationId": str(org_a.pk)})
    assert listed.status_code == 200 and [a["id"] for a in listed.json()] == [agent_id]
    assert listed["X-Reactive-Cache"] in ("hit", "miss")
    patched = client.patch(
        f"/api/agents/{agent_id}",
        json.dumps({"name": "r2"}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert patched.status_code == 200 and patched.json()["name"] == "r2"
    assert client.get(f"/api/agents/{agent_id}").json()["name"] == "r2"
    assert client_for(bob).get(f"/api/agents/{agent_id}").status_code == 403
    assert client.delete(f"/api/agents/{agent_id}", HTTP_X_CSRFTOKEN=token).status_code == 200
    assert client.get(f"/api/agents/{agent_id}").status_code == 404
    orgs = client.get("/api/organizations")
    assert [o["id"] for o in orgs.json()] == [str(org_a.pk)]
    tools = client.get("/api/tools", {"organizationId": str(org_a.pk)})
    assert tools.status_code == 200 and tools.json() == []


def test_openapi_documents_every_function(alice):
    from reactive.functions import registry

    doc = Client().get("/api/openapi.json").json()
    for name, fn in registry.items():
        path = doc["paths"][f"/api/rx/{name}"]
        assert ("get" in path) == (fn.kind == "query") and "post" in path
    op = doc["paths"]["/api/rx/agents.getAll"]["get"]
    assert {p["name"] for p in op["parameters"]} == {"organizationId", "limit"}
    assert "AgentOut" in doc["components"]["schemas"]


def test_metrics_endpoint_staff_only(alice, make_user, org_a):
    client = client_for(alice)
    client.get("/api/rx/agents.getAll", {"organizationId": str(org_a.pk)})
    client.get("/api/rx/agents.getAll", {"organizationId": str(org_a.pk)})
    assert client.get("/api/auth/metrics").status_code == 403
    staff = client_for(make_user("staff", is_staff=True))
    rows = {r["name"]: r for r in staff.get("/api/auth/metrics").json()["functions"]}
    assert rows["agents.getAll"]["hits"] >= 1 and rows["agents.getAll"]["misses"] >= 1


def test_unexpected_error_is_a_json_500_without_details(alice, org_a, monkeypatch):
    from reactive.functions import registry

    fn = registry["agents.getAll"]

    def explode(ctx, inp):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(fn, "handler", explode)
    resp = client_for(alice).get("/api/rx/agents.getAll", {"organizationId": str(org_a.pk)})
    assert resp.status_code == 500 and resp.json()["error"]["code"] == "server_error"
    assert b"secret internals" not in resp.content


def test_metrics_show_delivery_positions(alice, make_user):
    client = client_for(alice)
    client.post(
        "/api/events/ack",
        json.dumps({"eventId": "42", "clientId": "tab"}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value,
    )
    staff = client_for(make_user("ops", is_staff=True))
    positions = staff.get("/api/auth/metrics").json()["deliveryPositions"]
    assert {"user": "alice", "clientId": "tab", "eventId": "42"}.items() <= positions[0].items()


def test_token_lookup_is_cached_yet_deactivation_is_immediate(
    alice, org_a, django_assert_max_num_queries
):
    from agency.auth import user_for_token

    raw = ApiToken.issue(alice, "cached")[1]
    assert user_for_token(raw) == alice  # first use: read, and last_used_at written
    assert user_for_token(raw) == alice  # that write invalidated the entry: read again
    with django_assert_max_num_queries(0):
        again = user_for_token(raw)
    assert again.pk == alice.pk and again.username == "alice"
    again.display_name = "Alice A."
    again.save()  # a cached user saves without touching the deferred password
    alice.refresh_from_db()
    assert alice.check_password("pw-alice") and alice.display_name == "Alice A."
    alice.is_active = False
    alice.save()
    assert user_for_token(raw) is None
    client = Client()
    assert (
        client.get("/api/rx/organizations.getAll", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code
        == 401
    )


def test_swagger_ui_loads_its_assets_from_this_server(client):
    """/api/docs works offline and under a same-origin CSP: no asset comes from elsewhere."""
    import re

    page = client.get("/api/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, html
    assert not [a for a in assets if a.startswith(("http:", "https:", "//"))], assets
    for asset in assets:
        if asset.endswith((".js", ".css")):
            assert client.get(asset).status_code == 200, asset
