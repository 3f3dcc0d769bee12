"""The server-rendered pages: identity, authorization, forms (CSRF enforced), static files."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client

from agency.forms import AgentForm
from agency.models import Agent, Message, MessageType, Tool, ToolType
from reactive.errors import InvalidInput

pytestmark = pytest.mark.django_db(transaction=True)


def csrf(client: Client) -> dict[str, str]:
    return {"csrfmiddlewaretoken": client.cookies["csrftoken"].value}


@pytest.fixture
def member(api, alice):
    """Alice's browser: logged in, with the CSRF cookie."""
    return api(alice)


# --- identity -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/", "/orgs/{org}/", "/orgs/{org}/live/", "/orgs/{org}/agents/new/", "/agents/{agent}/"],
)
def test_pages_send_anonymous_visitors_to_the_login_page(api, org_a, agent_a, path):
    url = path.format(org=org_a.pk, agent=agent_a.pk)
    response = api(None).get(url)
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={url}"


def test_login_and_logout(api, alice):
    browser = api(None)
    page = browser.get("/login/")
    assert page.status_code == 200 and b'name="username"' in page.content
    assert b'"user": null' in page.content  # the client clears every cache on this page
    bad = browser.post("/login/", {"username": "alice", "password": "nope", **csrf(browser)})
    assert bad.status_code == 200 and b"Please enter a correct username" in bad.content
    good = browser.post(
        "/login/", {"username": "alice", "password": "pw-alice", "next": "/", **csrf(browser)}
    )
    assert good.status_code == 302 and good["Location"] == "/"
    assert browser.get("/").status_code == 200

    assert browser.get("/logout/").status_code == 405  # logging out is a POST
    assert browser.post("/logout/").status_code == 403  # ... with the CSRF token
    out = browser.post("/logout/", csrf(browser))
    assert out.status_code == 302 and out["Location"] == "/login/"
    assert browser.get("/").status_code == 302


def test_login_is_throttled_like_the_api(api, alice):
    browser = api(None)
    for _ in range(10):
        browser.post("/login/", {"username": "alice", "password": "x", **csrf(browser)})
    locked = browser.post("/login/", {"username": "alice", "password": "pw-alice", **csrf(browser)})
    assert locked.status_code == 200
    assert b"Too many failed logins" in locked.content


def test_a_login_post_without_csrf_is_refused(api, alice):
    response = api(None).post("/login/", {"username": "alice", "password": "pw-alice"})
    assert response.status_code == 403


# --- reading pages -----------------------------------------------------------------------------


def test_the_home_page_lists_only_my_organizations(member, org_a, org_b):
    page = member.get("/").content.decode()
    assert "Org A" in page and "Org B" not in page
    assert 'data-rx-fragment="agency.organizations"' in page
    assert 'id="rx-config"' in page


def test_the_organization_page_shows_live_agents_tools_and_messages(member, org_a, agent_a):
    Tool.objects.create(organization=org_a, name="Web fetch")
    Message.objects.create(organization=org_a, from_agent=agent_a, content="Status: green")
    page = member.get(f"/orgs/{org_a.pk}/").content.decode()
    for text in ("Agent A", "Web fetch", "Status: green", "Post a message"):
        assert text in page
    for fragment in ("agency.organization", "agency.agents", "agency.messages", "reactive.query"):
        assert f'data-rx-fragment="{fragment}"' in page
    assert f'"organization": "{org_a.pk}"' in page


@pytest.mark.parametrize(
    "path", ["/orgs/{org}/", "/orgs/{org}/live/", "/orgs/{org}/agents/new/", "/agents/{agent}/"]
)
def test_pages_authorize_like_the_api(api, bob, org_a, agent_a, path):
    outsider = api(bob)
    response = outsider.get(path.format(org=org_a.pk, agent=agent_a.pk))
    assert response.status_code == 403
    assert b"You are not a member of this organization" in response.content
    assert b"Agent A" not in response.content
    api_answer = outsider.get(f"/api/rx/agents.getAll?organizationId={org_a.pk}")
    assert api_answer.status_code == 403


def test_missing_rows_are_404(member):
    assert member.get(f"/orgs/{uuid.uuid4()}/").status_code == 403  # not a member of it
    assert member.get(f"/agents/{uuid.uuid4()}/").status_code == 404


def test_the_agent_page_has_a_live_edit_form(member, agent_a):
    page = member.get(f"/agents/{agent_a.pk}/").content.decode()
    assert 'data-rx-fragment="agency.agent"' in page
    assert 'data-rx-fragment="agency.agent_form"' in page
    assert 'value="Agent A"' in page and "csrfmiddlewaretoken" in page


def test_the_live_page(member, org_a):
    page = member.get(f"/orgs/{org_a.pk}/live/?transport=sse").content.decode()
    assert 'id="live-event-rows"' in page and '"transport": "sse"' in page
    assert "Server metrics (all processes)" not in page  # staff only
    assert (
        '"transport": "auto"' in member.get(f"/orgs/{org_a.pk}/live/?transport=x").content.decode()
    )


def test_staff_see_server_metrics_on_the_live_page(api, make_user, make_org):
    staff = make_user("boss", is_staff=True)
    org = make_org(staff)
    assert b"Server metrics (all processes)" in api(staff).get(f"/orgs/{org.pk}/live/").content


# --- writing pages -------------------------------------------------------------------------------


def test_creating_an_agent(member, org_a):
    tool = Tool.objects.create(organization=org_a, name="Search")
    response = member.post(
        f"/orgs/{org_a.pk}/agents/new/",
        {
            "name": "Nova",
            "role": "tester",
            "model": "gpt-4o",
            "temperature": "0.2",
            "system_prompt": "Be careful.",
            "is_active": "on",
            "tool_ids": [str(tool.pk)],
            **csrf(member),
        },
    )
    agent = Agent.objects.get(name="Nova")
    assert response.status_code == 302 and response["Location"] == f"/agents/{agent.pk}/"
    assert (agent.organization_id, agent.role, agent.temperature) == (org_a.pk, "tester", 0.2)
    assert list(agent.tools.all()) == [tool]


def test_form_errors_are_shown_and_nothing_is_written(member, org_a):
    response = member.post(
        f"/orgs/{org_a.pk}/agents/new/", {"name": "", "temperature": "9", **csrf(member)}
    )
    assert response.status_code == 422
    assert b"This field is required" in response.content
    assert b"less than or equal to 2" in response.content
    assert not Agent.objects.exists()


def test_a_form_post_without_csrf_changes_nothing(member, org_a, agent_a):
    assert (
        member.post(f"/orgs/{org_a.pk}/agents/new/", {"name": "X", "role": "r"}).status_code == 403
    )
    assert member.post(f"/agents/{agent_a.pk}/", {"name": "X", "role": "r"}).status_code == 403
    assert member.post(f"/agents/{agent_a.pk}/delete/").status_code == 403
    assert list(Agent.objects.values_list("name", flat=True)) == ["Agent A"]


def test_saving_the_edit_form_changes_only_what_differs(member, agent_a):
    agent_a.model = "gpt-4o"
    agent_a.save()
    response = member.post(
        f"/agents/{agent_a.pk}/",
        {
            "name": "Agent A",
            "role": "lead",
            "model": "gpt-4o",
            "temperature": "0.7",
            "is_active": "on",
            **csrf(member),
        },
    )
    assert response.status_code == 302 and response["Location"] == f"/agents/{agent_a.pk}/"
    agent_a.refresh_from_db()
    assert (agent_a.role, agent_a.model) == ("lead", "gpt-4o")


def test_outsiders_cannot_write_through_pages(api, bob, org_a, agent_a):
    outsider = api(bob)
    assert (
        outsider.post(
            f"/agents/{agent_a.pk}/", {"name": "Mine", "role": "r", **csrf(outsider)}
        ).status_code
        == 403
    )
    assert outsider.post(f"/agents/{agent_a.pk}/delete/", csrf(outsider)).status_code == 403
    assert (
        outsider.post(f"/orgs/{org_a.pk}/tools/new/", {"name": "Spy", **csrf(outsider)}).status_code
        == 403
    )
    agent_a.refresh_from_db()
    assert agent_a.name == "Agent A" and not Tool.objects.exists()


def test_deleting_an_agent(member, org_a, agent_a):
    response = member.post(f"/agents/{agent_a.pk}/delete/", csrf(member))
    assert response.status_code == 302 and response["Location"] == f"/orgs/{org_a.pk}/"
    assert not Agent.objects.exists()


def test_creating_a_tool(member, org_a):
    ToolType.objects.create(slug="http", name="HTTP request")
    page = member.get(f"/orgs/{org_a.pk}/tools/new/")
    assert b"HTTP request" in page.content
    response = member.post(
        f"/orgs/{org_a.pk}/tools/new/",
        {"name": "Fetch", "tool_type": "http", "config": '{"timeout": 5}', **csrf(member)},
    )
    assert response.status_code == 302 and response["Location"] == f"/orgs/{org_a.pk}/"
    tool = Tool.objects.get()
    assert (tool.name, tool.tool_type.slug, tool.config) == ("Fetch", "http", {"timeout": 5})
    bad = member.post(
        f"/orgs/{org_a.pk}/tools/new/", {"name": "Bad", "config": "[1, 2]", **csrf(member)}
    )
    assert bad.status_code == 422 and b"Enter a JSON object" in bad.content


def test_posting_a_message(member, org_a, agent_a):
    MessageType.objects.create(slug="chat", name="Chat")
    response = member.post(
        f"/orgs/{org_a.pk}/messages/new/",
        {"from_agent_id": str(agent_a.pk), "message_type": "chat", "content": "Hi", **csrf(member)},
    )
    assert response.status_code == 302
    message = Message.objects.get()
    assert (message.content, message.to_agent_id, message.message_type.slug) == ("Hi", None, "chat")
    empty = member.post(
        f"/orgs/{org_a.pk}/messages/new/",
        {"from_agent_id": str(agent_a.pk), "content": "", **csrf(member)},
    )
    assert empty.status_code == 422 and Message.objects.count() == 1


def test_function_errors_land_on_the_form_fields():
    form = AgentForm(data={"name": "n", "role": "r"})
    assert form.is_valid()
    form.add_reactive_errors(
        InvalidInput(errors=[{"field": "data.systemPrompt", "message": "Too long."}])
    )
    assert form.errors["system_prompt"] == ["Too long."]
    other = AgentForm(data={"name": "n", "role": "r"})
    other.is_valid()
    other.add_reactive_errors(
        InvalidInput("Nope.", errors=[{"field": "modelSettings", "message": "x"}])
    )
    assert other.non_field_errors() == ["Nope."]


# --- the browser client's files ----------------------------------------------------------------------


def test_the_client_and_its_vendored_library_are_served(api):
    browser = api(None)
    client = browser.get("/static/reactive/client.js")
    assert client.status_code == 200
    assert client["Content-Type"].startswith("text/javascript")
    assert b'from "./reactive-client.js"' in client.content  # which imports fragments.js
    fragments = browser.get("/static/reactive/fragments.js")
    assert fragments.status_code == 200
    assert b'from "./vendor/idiomorph-0.8.0.esm.js"' in fragments.content
    morph = browser.get("/static/reactive/vendor/idiomorph-0.8.0.esm.js")
    assert morph.status_code == 200 and b"export {Idiomorph}" in morph.content
    again = browser.get(
        "/static/reactive/client.js", HTTP_IF_MODIFIED_SINCE=client["Last-Modified"]
    )
    assert again.status_code == 304
    assert browser.get("/static/reactive/../../manage.py").status_code == 404
    assert browser.get("/static/reactive/missing.js").status_code == 404
