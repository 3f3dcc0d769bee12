"""Live fragments: the template tags, the re-render endpoint, and what they tell the client."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.core import signing
from django.template import Context, Template
from django.test import RequestFactory

from agency.models import Agent, Message, Tool
from reactive.errors import NotFound
from reactive.fragments import (
    QUERY_FRAGMENT,
    SIGNING_SALT,
    Fragment,
    FragmentRegistry,
    Loader,
    _min_position,
    fragments,
    jsonable,
    sign_query,
)
from reactive.functions import Context as RxContext
from reactive.log import get_log

pytestmark = pytest.mark.django_db(transaction=True)  # writes publish on commit

import agency.views  # noqa: E402,F401  (declares the agency's fragments)


def render(template: str, user, **context) -> str:
    request = RequestFactory().get("/")
    request.user = user
    return Template("{% load reactive %}" + template).render(
        Context({"request": request, **context})
    )


def attrs(html: str) -> dict[str, str]:
    """The live wrapper's data attributes (HTML-unescaped)."""
    import html as htmllib

    head = html[: html.index(">")]
    return {
        name: htmllib.unescape(value)
        for name, value in re.findall(r'(data-rx-[\w-]+)="([^"]*)"', head)
    }


def test_live_fragment_renders_the_data_and_marks_it_live(alice, org_a, agent_a):
    html = render('{% live_fragment "agency.agents" organization_id=org.id %}', alice, org=org_a)
    found = attrs(html)
    assert "Agent A" in html
    assert found["data-rx-fragment"] == "agency.agents"
    assert found["data-rx-src"] == f"/reactive/fragments/agency.agents?organization_id={org_a.pk}"
    assert f"agency.agent:organization_id={org_a.pk}" in json.loads(found["data-rx-tags"])
    assert json.loads(found["data-rx-tenants"]) == [str(org_a.pk)]
    assert json.loads(found["data-rx-queries"]) == [
        {"name": "agents.getAll", "input": {"organizationId": str(org_a.pk), "limit": 50}}
    ]
    assert found["data-rx-cursor"].isdigit()
    assert "data-rx-error" not in found


def test_the_tags_of_a_fragment_meet_the_event_of_a_write_to_its_data(alice, org_a, agent_a):
    found = attrs(
        render('{% live_fragment "agency.agents" organization_id=org.id %}', alice, org=org_a)
    )
    cursor = int(found["data-rx-cursor"])
    agent_a.name = "Renamed"
    agent_a.save()
    events = get_log().read([str(org_a.pk)], cursor)
    assert events, "the write produced no event"
    assert set(json.loads(found["data-rx-tags"])) & set(events[-1].tags)


def test_the_endpoint_re_renders_for_the_caller_with_cache_status(api, alice, org_a, agent_a):
    client = api(alice)
    url = f"/reactive/fragments/agency.agents?organization_id={org_a.pk}"
    first = client.get(url)
    assert first.status_code == 200
    assert first["X-Reactive-Cache"] == "miss"
    assert first["Cache-Control"] == "private, no-store"
    body = first.json()
    assert "Agent A" in body["html"] and "data-rx-fragment" not in body["html"]  # inner HTML
    assert body["tenants"] == [str(org_a.pk)]
    assert body["cursor"].isdigit() and (body["hits"], body["misses"]) == (0, 1)
    assert client.get(url)["X-Reactive-Cache"] == "hit"

    Agent.objects.create(organization=org_a, name="Newcomer", role="r")
    again = client.get(url).json()
    assert "Newcomer" in again["html"]
    assert int(again["cursor"]) > int(body["cursor"])


def test_a_multi_query_fragment_reports_every_query(api, alice, org_a, agent_a):
    Message.objects.create(
        organization=org_a, from_agent=agent_a, content="hello there", metadata={}
    )
    body = api(alice).get(f"/reactive/fragments/agency.messages?organization_id={org_a.pk}").json()
    assert "hello there" in body["html"] and "Agent A" in body["html"]
    assert [q["name"] for q in body["queries"]] == ["agents.getAll", "messages.getAll"]
    assert f"agency.message:organization_id={org_a.pk}" in body["tags"]


@pytest.mark.parametrize(
    ("who", "status"),
    [(None, 401), ("bob", 403), ("alice", 200)],
    ids=["anonymous", "other", "member"],
)
def test_the_endpoint_authorizes_like_the_api(api, alice, bob, org_a, who, status):
    user = {"alice": alice, "bob": bob, None: None}[who]
    client = api(user)
    fragment = client.get(f"/reactive/fragments/agency.agents?organization_id={org_a.pk}")
    rx = client.get(f"/api/rx/agents.getAll?organizationId={org_a.pk}")
    assert fragment.status_code == rx.status_code == status
    if status != 200:
        assert fragment.json()["error"]["code"] == rx.json()["error"]["code"]


def test_the_endpoint_refuses_unknown_fragments_and_parameters(api, alice, org_a):
    client = api(alice)
    assert client.get("/reactive/fragments/nope").status_code == 404
    wrong = client.get(f"/reactive/fragments/agency.agents?org={org_a.pk}")
    assert wrong.status_code == 422
    assert wrong.json()["error"]["fields"] == [{"field": "org", "message": "Unexpected."}]
    assert client.get("/reactive/fragments/agency.agents").status_code == 422
    bad_id = client.get("/reactive/fragments/agency.agents?organization_id=not-a-uuid")
    assert bad_id.status_code == 422
    too_long = client.get(f"/reactive/fragments/agency.agents?organization_id={'x' * 3000}")
    assert too_long.status_code == 422
    post = client.post(
        f"/reactive/fragments/agency.agents?organization_id={org_a.pk}",
        HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value,
    )
    assert post.status_code == 405


def test_live_query_renders_one_query_and_signs_its_spec(api, alice, org_a):
    Tool.objects.create(organization=org_a, name="Fetcher")
    html = render(
        '{% live_query "tools.getAll" organizationId=org.id limit=5 '
        'template="fragments/tools.html" var="tools" rx_element="section" rx_class="x" %}',
        alice,
        org=org_a,
    )
    assert html.startswith('<section class="rx-fragment x"')
    assert "Fetcher" in html
    src = attrs(html)["data-rx-src"]
    assert src.startswith(f"/reactive/fragments/{QUERY_FRAGMENT}?s=")
    body = api(alice).get(src).json()
    assert "Fetcher" in body["html"]
    assert body["queries"] == [
        {"name": "tools.getAll", "input": {"organizationId": str(org_a.pk), "limit": 5}}
    ]


def test_a_signed_spec_cannot_be_forged_or_altered(api, alice, bob, org_a, org_b):
    client = api(alice)
    url = f"/reactive/fragments/{QUERY_FRAGMENT}?s="
    forged = signing.dumps(
        {"q": "tools.getAll", "i": {"organizationId": str(org_a.pk)}, "t": "base.html", "v": "x"},
        salt="another-salt",
    )
    assert client.get(url + forged).status_code == 400
    good = sign_query("tools.getAll", {"organizationId": org_a.pk}, "fragments/tools.html", "tools")
    assert client.get(url + good[:-2] + "xx").status_code == 400
    assert client.get(url + good).status_code == 200
    # A genuine spec still runs with the caller's identity: Bob may not read Alice's tools.
    assert api(bob).get(url + good).status_code == 403
    # ... and a signature over something else than a spec is refused too.
    other = signing.dumps(["tools.getAll"], salt=SIGNING_SALT)
    assert client.get(url + other).status_code == 400


def test_an_error_renders_a_notice_in_a_wrapper_that_stays_live(bob, org_a):
    html = render('{% live_fragment "agency.agents" organization_id=org.id %}', bob, org=org_a)
    found = attrs(html)
    assert found["data-rx-error"] == "403"
    assert "You do not have access" in html
    assert found["data-rx-src"].endswith(f"organization_id={org_a.pk}")
    gone = render('{% live_fragment "agency.agent" agent_id=id %}', bob, id=uuid.uuid4())
    assert attrs(gone)["data-rx-error"] == "404"


def test_the_tags_need_the_request_in_the_context(alice):
    from django.template import TemplateSyntaxError

    with pytest.raises(TemplateSyntaxError, match="request"):
        Template('{% load reactive %}{% live_fragment "agency.organizations" %}').render(Context())


def test_the_loader_runs_queries_only(alice):
    load = Loader(RxContext(user=alice))
    with pytest.raises(NotFound):
        load("agents.create", {})
    with pytest.raises(NotFound):
        load("no.such", {})
    assert load("organizations.getAll") == []
    assert load.queries == [{"name": "organizations.getAll", "input": {}}]
    assert (load.hits, load.misses) == (0, 1)


def test_a_fragment_name_is_declared_once():
    registry = FragmentRegistry()
    registry.add(Fragment("x", "t.html", lambda load: {}))
    with pytest.raises(ValueError, match="declared twice"):
        registry.add(Fragment("x", "t.html", lambda load: {}))
    assert "agency.agents" in fragments


def test_helpers():
    assert _min_position("15", "9") == "9"
    assert _min_position("", "9") == ""
    value = uuid.uuid4()
    assert jsonable({"a": value, "b": [1, None, True], "c": 1.5}) == {
        "a": str(value),
        "b": [1, None, True],
        "c": 1.5,
    }
    out = Template(
        "{% load reactive %}{{ names|get_item:key }}|{{ none|get_item:key }}|"
        "{{ when|as_datetime|date:'Y' }}"
    ).render(
        Context(
            {"names": {"k": "v"}, "key": "k", "none": None, "when": "2024-05-01T10:00:00+00:00"}
        )
    )
    assert out == "v|None|2024"


def test_reactive_client_passes_identity_and_paths(alice):
    html = render("{% reactive_client organization=org transport='sse' %}", alice, org="o-1")
    config = json.loads(
        re.search(r'id="rx-config" type="application/json">(.*?)</script>', html)[1]
    )
    assert config["user"] == str(alice.pk)
    assert config["organization"] == "o-1" and config["transport"] == "sse"
    assert config["eventsPath"] == "/api/events" and config["loginUrl"] == "/login/"
    assert config["csrfToken"]
    assert 'import { start } from "/static/reactive/client.js"' in html

    request = RequestFactory().get("/")
    from django.contrib.auth.models import AnonymousUser

    request.user = AnonymousUser()
    anonymous = Template("{% load reactive %}{% reactive_client %}").render(
        Context({"request": request})
    )
    assert '"user": null' in anonymous
