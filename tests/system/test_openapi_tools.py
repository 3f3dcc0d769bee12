"""The OpenAPI document as SPA developers and their tools meet it (issue 13).

First what the document says, and that the server does what it says (Python,
fast). Then the tools themselves, against a live server: openapi-typescript
(docs/api.md's command, as written but for the server's address) generates the
types; tsc --strict type-checks tests/clients/*.ts and docs/api.md's example
with them, and refuses each tests/clients/bad_*.ts on the lines marked ERROR;
Redocly CLI lints the document (no errors). The npm packages are installed
once, at the versions pinned here, into .cache/node (not committed).
Schemathesis runs in tests/system/test_openapi_fuzz.py.
"""

from __future__ import annotations

import collections
import json
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import resolve
from pydantic import BaseModel

from agency.models import ApiToken, Tool, database_name_validator
from reactive.functions import registry
from tests.live import ROOT, LiveServer
from tests.node import NODE_DIR, TYPESCRIPT, install

NODE_PACKAGES = {
    "openapi-typescript": "7.13.0",
    "openapi-fetch": "0.17.0",
    "typescript": TYPESCRIPT,
    "@redocly/cli": "2.77.0",
}
CLIENTS = ROOT / "tests" / "clients"
DOCS = ROOT / "docs" / "api.md"
OPERATION_ID = re.compile(r"^[a-z][A-Za-z0-9]*$")


def served_document() -> dict[str, Any]:
    """/api/openapi.json as served, refusing duplicated keys (as YAML parsers do)."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        counts = collections.Counter(key for key, _ in pairs)
        duplicated = [key for key, n in counts.items() if n > 1]
        assert not duplicated, f"duplicated keys {duplicated} in {dict(pairs)!r:.300}"
        return dict(pairs)

    response = Client().get("/api/openapi.json")
    assert response.status_code == 200
    return json.loads(response.content, object_pairs_hook=unique)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return served_document()


def operations(document: dict[str, Any]):
    for path, item in document["paths"].items():
        for method, op in item.items():
            yield path, method, op


def component(document: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    assert set(ref) == {"$ref"}, f"not a named component: {ref}"
    return document["components"]["schemas"][ref["$ref"].rsplit("/", 1)[-1]]


# --- the document -------------------------------------------------------------------------------


def test_no_duplicated_keys():
    """Item 1: every key once (a string "200" next to Ninja's integer 200 was not)."""
    document = served_document()
    for _, _, op in operations(document):
        assert all(isinstance(code, str) for code in op["responses"])


def test_every_operation_is_named_typed_and_secured(document):
    """Items 2, 6 and 8: readable unique operationIds, typed bodies and answers as named
    components, required bodies where the input has required fields, security declared."""
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["sessionCookie"]["in"] == "cookie"
    assert schemes["csrfToken"] == {**schemes["csrfToken"], "in": "header", "name": "X-CSRFToken"}
    assert "Error" not in document["components"]["schemas"]  # the global Error of generated code
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids)) >= 41
    for path, method, op in operations(document):
        where = f"{method.upper()} {path}"
        assert OPERATION_ID.match(op["operationId"]), where
        assert op["summary"] and op["tags"], where
        assert "security" in op, where  # [] would say: no identity needed
        for requirement in op["security"]:
            assert set(requirement) <= set(schemes), where
        if method != "get" and op["operationId"] != "login":
            assert {"bearerAuth": []} in op["security"], where
            assert {"sessionCookie": [], "csrfToken": []} in op["security"], where
        ok = [code for code in op["responses"] if code.startswith("2")]
        assert len(ok) == 1, where
        schema = next(iter(op["responses"][ok[0]]["content"].values()))["schema"]
        component(document, schema.get("items", schema))  # named, not an inline object
        for code, response in op["responses"].items():
            if not code.startswith("2"):
                assert response["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ApiError"
                }, where
        if "requestBody" in op:
            schema = component(document, op["requestBody"]["content"]["application/json"]["schema"])
            assert op["requestBody"]["required"] is bool(schema.get("required")), where
        elif method in ("post", "patch"):
            assert op["operationId"] == "logout", f"{where} has no request body"


def test_named_components_of_every_function(document):
    schemas = document["components"]["schemas"]
    by_id = {op["operationId"]: op for _, _, op in operations(document)}
    for fn in registry.values():
        assert fn.input.__name__ in schemas, fn.name
        camel = re.sub(r"\.(\w)", lambda m: m[1].upper(), fn.name)
        result = by_id[camel]["responses"]["200"]["content"]["application/json"]["schema"]
        assert result == {"$ref": f"#/components/schemas/{camel[0].upper()}{camel[1:]}Result"}
    get_one = component(
        document, by_id["agentsGetOne"]["responses"]["200"]["content"]["application/json"]["schema"]
    )
    assert get_one["properties"]["data"] == {"$ref": "#/components/schemas/AgentDetailOut"}
    login = by_id["login"]
    assert (
        component(document, login["requestBody"]["content"]["application/json"]["schema"])
        == (schemas["Credentials"])
    )
    me = by_id["getMe"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert component(document, me)["properties"]["user"] == {"$ref": "#/components/schemas/UserOut"}
    assert set(schemas["UserOut"]["required"]) == {
        "id",
        "username",
        "email",
        "displayName",
        "isStaff",
    }


def test_every_api_route_is_in_the_document(document):
    """Item 7: the REST routes, the event stream and its acknowledgement are operations."""
    documented = {(method, path) for path, method, _ in operations(document)}
    expected = {("get", f"/api/rx/{n}") for n, f in registry.items() if f.kind == "query"}
    expected |= {("post", f"/api/rx/{n}") for n in registry}
    for resource in ("agents", "tools", "organizations"):
        expected |= {("get", f"/api/{resource}"), ("post", f"/api/{resource}")}
        expected.add(("get", f"/api/{resource}/{{item_id}}"))
        if resource != "organizations":
            expected |= {(m, f"/api/{resource}/{{item_id}}") for m in ("patch", "delete")}
    expected |= {("get", "/api/events"), ("post", "/api/events/ack")}
    expected |= {("post", "/api/auth/login"), ("post", "/api/auth/logout")}
    expected |= {("get", "/api/auth/me"), ("get", "/api/auth/metrics")}
    assert documented == expected
    stream = document["paths"]["/api/events"]["get"]["responses"]["200"]["content"]
    assert list(stream) == ["text/event-stream"]
    # /api/events is the API's operation (its Django name is only for reverse()).
    from teamhub.api import api

    assert resolve("/api/events").func.__module__.startswith("ninja")
    hidden = [
        (path, op.methods)
        for router in api._get_bound_routers()
        for path, view in router.path_operations.items()
        for op in view.operations
        if not op.include_in_schema
    ]
    assert hidden == [("/{name}", ["GET", "POST"])]  # the 404 of unknown functions only


def test_update_fields_are_optional_and_not_nullable(document):
    """Item 3: no field of AgentFields/ToolFields required or defaulted; null only where it
    means something (maxTokens: no limit; toolType: none)."""
    schemas = document["components"]["schemas"]
    for name, nullable in [("AgentFields", {"maxTokens"}), ("ToolFields", {"toolType"})]:
        schema = schemas[name]
        assert "required" not in schema and schema["additionalProperties"] is False
        for field, prop in schema["properties"].items():
            assert "default" not in prop, (name, field)
            allows_null = {"type": "null"} in prop.get("anyOf", [])
            assert allows_null is (field in nullable), (name, field)
    for schema in schemas.values():  # no input component obliges a caller to send a default
        for prop in schema.get("properties", {}).values():
            assert "default" not in prop


def _constraints(model: type[BaseModel]):
    """(alias, JSON Schema keyword, value) of every constraint the model's fields check."""
    keywords = {
        "min_length": "minLength",
        "max_length": "maxLength",
        "ge": "minimum",
        "le": "maximum",
        "pattern": "pattern",
    }
    for name, field in model.model_fields.items():
        alias = field.alias or name
        for meta in field.metadata:
            for attr, keyword in keywords.items():
                value = getattr(meta, attr, None)
                if value is not None:
                    yield alias, keyword, value


def _find(schema: dict[str, Any], keyword: str, value: Any, document: dict[str, Any]) -> bool:
    """Whether `keyword: value` (or its array/object form) is in `schema` or its branches."""
    if "$ref" in schema:
        return _find(component(document, {"$ref": schema["$ref"]}), keyword, value, document)
    forms = {keyword}
    if keyword == "maxLength":
        forms |= {"maxItems", "maxProperties"}
    if keyword == "minLength":
        forms |= {"minItems", "minProperties"}
    if any(schema.get(form) == value for form in forms):
        return True
    return any(_find(branch, keyword, value, document) for branch in schema.get("anyOf", []))


def test_every_validator_is_in_the_schema(document):
    """Item 5: each constraint of each input field is in its published schema, the database
    name's pattern included; numbers and booleans are typed as such (strict)."""
    schemas = document["components"]["schemas"]
    models = {fn.input for fn in registry.values()}
    models |= {m.model_fields["data"].annotation for m in list(models) if "data" in m.model_fields}
    checked = 0
    for model in models:
        props = schemas[model.__name__].get("properties", {})
        for alias, keyword, value in _constraints(model):
            assert _find(props[alias], keyword, value, document), (model.__name__, alias, keyword)
            checked += 1
    assert checked > 30
    database_name = schemas["OrganizationCreate"]["properties"]["databaseName"]
    assert database_name["pattern"] == "^[a-z][a-z0-9_]{0,62}$"
    assert database_name_validator.regex.pattern == r"\A[a-z][a-z0-9_]{0,62}\Z"
    agent = schemas["AgentFields"]["properties"]
    assert agent["temperature"]["type"] == "number" and agent["isActive"] == {"type": "boolean"}
    assert agent["maxTokens"]["anyOf"][0]["type"] == "integer"
    credentials = schemas["Credentials"]["properties"]
    assert credentials["username"]["maxLength"] == 150
    assert credentials["password"]["minLength"] == 1


# --- the server does what the document says ---------------------------------------------------


@pytest.fixture
def caller(db, make_user, make_org):
    user = make_user("schema")
    org = make_org(user)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(user, 'schema')[1]}")
    return client, str(org.pk)


def post(client: Client, path: str, body: Any):
    return client.post(path, json.dumps(body), content_type="application/json")


def fields(response) -> list[str]:
    assert response.status_code == 422, response.content
    return [f["field"] for f in response.json()["error"]["fields"]]


def test_json_bodies_are_typed_strictly(caller):
    """Item 4: what the schema calls a number, an integer or a boolean is one in JSON."""
    client, org = caller
    base = {"organizationId": org, "name": "n", "role": "r"}
    for field, value in [("temperature", False), ("maxTokens", "12"), ("isActive", "yes")]:
        assert fields(post(client, "/api/rx/agents.create", {**base, field: value})) == [field]
        assert fields(post(client, "/api/agents", {**base, field: value})) == [field]
    assert fields(post(client, "/api/rx/agents.getAll", {"organizationId": org, "limit": "1"})) == [
        "limit"
    ]
    assert fields(post(client, "/api/rx/agents.getAll", {"organizationId": org, "limit": 1.5})) == [
        "limit"
    ]
    created = post(client, "/api/rx/agents.create", {**base, "temperature": 1, "maxTokens": 12})
    assert created.status_code == 200 and created.json()["data"]["temperature"] == 1.0
    # a query string carries text: there ?limit=1 is the number 1
    for path in ("/api/rx/agents.getAll", "/api/agents"):
        assert client.get(path, {"organizationId": org, "limit": "1"}).status_code == 200
        assert fields(client.get(path, {"organizationId": org, "limit": "x"})) == ["limit"]
    assert client.post("/api/rx/agents.getAll", content_type="application/json").status_code == 422


def test_update_fields_are_optional_not_nullable(caller):
    """Item 3: the docs' own {id, data: {name}} works; null is refused except where it means
    something."""
    client, org = caller
    agent = post(client, "/api/rx/agents.create", {"organizationId": org, "name": "a", "role": "r"})
    agent_id = agent.json()["data"]["id"]
    update = "/api/rx/agents.update"
    assert post(client, update, {"id": agent_id, "data": {"name": "Atlas"}}).status_code == 200
    for field in ("name", "systemPrompt", "temperature", "isActive", "toolIds", "modelSettings"):
        assert fields(post(client, update, {"id": agent_id, "data": {field: None}})) == [
            f"data.{field}"
        ]
    cleared = post(client, update, {"id": agent_id, "data": {"maxTokens": None}})
    assert cleared.status_code == 200 and cleared.json()["data"]["maxTokens"] is None
    tool = post(client, "/api/rx/tools.create", {"organizationId": org, "name": "t"})
    tool_id = tool.json()["data"]["id"]
    body = {"id": tool_id, "data": {"toolType": None}}
    assert post(client, "/api/rx/tools.update", body).status_code == 200


def test_a_field_has_one_name_whichever_check_refuses_it(caller):
    """Item 13: the path of the field in the input, for every kind of refusal."""
    client, org = caller
    agent = post(client, "/api/rx/agents.create", {"organizationId": org, "name": "a", "role": "r"})
    agent_id = agent.json()["data"]["id"]
    tool_id = post(client, "/api/rx/tools.create", {"organizationId": org, "name": "t"}).json()[
        "data"
    ]["id"]
    elsewhere = str(Tool.objects.create(organization_id=_other_org(), name="x").pk)
    refusals = {
        "systemPrompt": ["a\x00b", None, "x" * 100_001],
        "toolIds": [[elsewhere], None, ["not-a-uuid"]],
    }
    for field, values in refusals.items():
        for value in values:
            body = {"id": agent_id, "data": {field: value}}
            named = fields(post(client, "/api/rx/agents.update", body))
            assert named and all(_at(f, f"data.{field}") for f in named), (field, value, named)
            patched = client.patch(
                f"/api/agents/{agent_id}", json.dumps({field: value}), "application/json"
            )
            named = fields(patched)
            assert named and all(_at(f, field) for f in named), (field, value, named)
    for value in ["no-such-type", "not a slug"]:
        body = {"id": tool_id, "data": {"toolType": value}}
        assert fields(post(client, "/api/rx/tools.update", body)) == ["data.toolType"]
        patched = client.patch(
            f"/api/tools/{tool_id}", json.dumps({"toolType": value}), "application/json"
        )
        assert fields(patched) == ["toolType"]


def _at(name: str, field: str) -> bool:
    """Whether an error's field `name` is `field` or inside it (``toolIds.0``)."""
    return name == field or name.startswith(field + ".")


def _other_org() -> str:
    from agency.models import Organization, User

    owner = User.objects.create_user("elsewhere")
    return str(Organization.objects.create(name="E", owner=owner, database_name="elsewhere").pk)


def test_ack_is_checked_against_its_schema(caller):
    client, _ = caller
    for body in [{"eventId": "1e3"}, {"eventId": -1}, {"eventId": "1" * 40}, {"eventId": True}]:
        assert fields(post(client, "/api/events/ack", body)) == ["eventId"]
    assert fields(post(client, "/api/events/ack", {"eventId": 1, "clientId": 5})) == ["clientId"]
    acked = post(client, "/api/events/ack", {"eventId": 12, "clientId": "tab"})
    assert acked.status_code == 200 and acked.json() == {"eventId": "12", "clientId": "tab"}


# --- the tools --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node() -> dict[str, str]:
    """The environment the npm tools run in, installed into .cache/node when missing."""
    return install(NODE_PACKAGES, "the OpenAPI tool checks")


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory):
    srv = LiveServer(tmp_path_factory.mktemp("openapi-tools"))
    yield srv
    srv.stop()


@pytest.fixture
def workdir():
    """A directory under .cache/node, so that npx and tsc find the packages installed there."""
    path = Path(tempfile.mkdtemp(prefix="work-", dir=NODE_DIR))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def docs_command() -> list[str]:
    """docs/api.md's openapi-typescript command."""
    text = DOCS.read_text()
    lines = [line for line in text.splitlines() if line.startswith("npx openapi-typescript ")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0])


def docs_examples() -> list[str]:
    """docs/api.md's TypeScript blocks."""
    return re.findall(r"```ts\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)


TSC_ERROR = re.compile(r"^(?P<file>[^(\s]+)\((?P<line>\d+),\d+\): error (?P<code>TS\d+)", re.M)


def test_typescript_client_from_the_live_document(node, server, workdir):
    """Item 1, 3 and 6 as an SPA meets them: the docs' command makes types the docs' example
    and a client of every operation compile with; wrong calls do not."""
    command = docs_command()
    assert command[:3] == ["npx", "openapi-typescript", "http://127.0.0.1:8000/api/openapi.json"]
    command[2] = server.url + "/api/openapi.json"
    generate = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=120, env=node
    )
    assert generate.returncode == 0, generate.stdout + generate.stderr
    assert f"openapi-typescript {NODE_PACKAGES['openapi-typescript']}" in generate.stdout
    output = command[command.index("-o") + 1]
    source = workdir / Path(output).parent
    types = (workdir / output).read_text()
    assert "operations" in types and '"/api/agents/{item_id}"' in types
    good = {path.name: path.read_text() for path in CLIENTS.glob("*.ts")}
    bad = {name: text for name, text in good.items() if name.startswith("bad_")}
    assert len(bad) >= 4 and "client.ts" in good
    for i, example in enumerate(docs_examples()):
        good[f"docs_example_{i}.ts"] = example
    assert any(name.startswith("docs_example_") for name in good)
    for name, text in good.items():
        (source / name).write_text(text)
    tsc = subprocess.run(
        [
            str(NODE_DIR / "node_modules" / ".bin" / "tsc"),
            "--strict",
            "--noEmit",
            "--pretty",
            "false",
            "--target",
            "es2022",
            "--module",
            "es2022",
            "--moduleResolution",
            "bundler",
            "--lib",
            "es2022,dom",
            *sorted(f"{source.relative_to(workdir)}/{name}" for name in good),
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=180,
        env=node,
    )
    errors: dict[str, set[int]] = collections.defaultdict(set)
    for match in TSC_ERROR.finditer(tsc.stdout):
        errors[Path(match["file"]).name].add(int(match["line"]))
    unexpected = {name: lines for name, lines in errors.items() if name not in bad}
    assert not unexpected, tsc.stdout
    for name, text in bad.items():
        marked = {i for i, line in enumerate(text.splitlines(), 1) if line.endswith("// ERROR")}
        assert marked, f"{name} marks no line with // ERROR"
        assert errors.get(name) == marked, (name, tsc.stdout)
    assert tsc.returncode != 0  # the bad files failed the compilation


def test_redocly_lints_the_live_document(node, server):
    """Item 1: Redocly refused the document; its recommended rules now find no error."""
    lint = subprocess.run(
        [
            str(NODE_DIR / "node_modules" / ".bin" / "redocly"),
            "lint",
            server.url + "/api/openapi.json",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=node,
        cwd=NODE_DIR,
    )
    start = lint.stdout.find("{")
    assert start >= 0, lint.stdout + lint.stderr
    report = json.loads(lint.stdout[start:])
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    assert report["totals"]["errors"] == 0 and not errors, json.dumps(errors, indent=1)[:5000]
    assert lint.returncode == 0, lint.stderr[-3000:]
    warnings = sorted({p["ruleId"] for p in report["problems"]})
    assert set(warnings) <= {"info-license"}, warnings  # no license chosen for the project yet


def test_database_name_pattern_means_the_same_in_javascript(node, document):
    """Item 5: the pattern a generator reads accepts exactly what the server's validator does."""
    pattern = document["components"]["schemas"]["OrganizationCreate"]["properties"]["databaseName"][
        "pattern"
    ]
    samples = ["a", "abc_1", "a" * 63, "a" * 64, "1abc", "Abc", "abc\n", "ab-c", "", "_a", "é"]
    script = (
        f"const re = new RegExp({json.dumps(pattern)}, 'u');"
        f"console.log(JSON.stringify({json.dumps(samples)}.map((s) => re.test(s))));"
    )
    run = subprocess.run(
        ["node", "-e", script], capture_output=True, text=True, timeout=30, env=node
    )
    assert run.returncode == 0, run.stderr
    javascript = json.loads(run.stdout)
    python = [bool(database_name_validator.regex.match(s)) for s in samples]
    assert javascript == python, list(zip(samples, javascript, python, strict=True))
