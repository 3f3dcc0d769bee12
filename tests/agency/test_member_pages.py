"""The members and settings pages, and the organization page's live message form.

Server side (the browser side is tests/system/browser/test_browser_members.py): what each
role sees, what the forms do, and that the pages refuse what the functions refuse.
"""

from __future__ import annotations

import json

import pytest

from agency.models import Agent, Membership, MessageType, Organization, ToolType

pytestmark = pytest.mark.django_db(transaction=True)


def csrf(client) -> dict[str, str]:
    return {"csrfmiddlewaretoken": client.cookies["csrftoken"].value}


@pytest.fixture
def team(make_user, make_org):
    owner, admin, member = make_user("olga"), make_user("adam"), make_user("mia")
    make_user("newton")  # belongs nowhere yet
    org = make_org(owner, name="Team")
    Membership.objects.create(user=admin, organization=org, role="admin")
    Membership.objects.create(user=member, organization=org, role="member")
    return {"org": org, "owner": owner, "admin": admin, "member": member}


def row_of(team, user) -> str:
    return str(Membership.objects.get(organization=team["org"], user=user).pk)


def test_the_organization_page_links_to_members_and_settings(api, team):
    page = api(team["member"]).get(f"/orgs/{team['org'].pk}/").content.decode()
    assert f'href="/orgs/{team["org"].pk}/members/"' in page
    assert f'href="/orgs/{team["org"].pk}/settings/"' in page


@pytest.mark.parametrize(
    "who,controls",
    [("owner", {"owner", "add"}), ("admin", {"add"}), ("member", set())],
)
def test_the_members_page_shows_what_the_role_allows(api, team, who, controls):
    page = api(team[who]).get(f"/orgs/{team['org'].pk}/members/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-rx-fragment="agency.members"' in html
    for username in ("olga", "adam", "mia"):
        assert f'data-username="{username}"' in html
    assert ('id="member-form"' in html) is ("add" in controls)
    assert ('<option value="owner"' in html) is ("owner" in controls)
    assert ('name="role"' in html) is (who != "member")  # role selects: managers only
    assert html.count(">Leave</button>") == 1  # their own row
    removes = html.count(">Remove</button>")
    assert removes == {"owner": 2, "admin": 1, "member": 0}[who]  # an admin: not the owner


def test_adding_a_member_from_the_page(api, team):
    browser = api(team["admin"])
    url = f"/orgs/{team['org'].pk}/members/"
    done = browser.post(url, {"username": "newton", "role": "admin", **csrf(browser)})
    assert done.status_code == 302 and done["Location"] == url
    assert Membership.objects.get(organization=team["org"], user__username="newton").role == "admin"
    for form, status, text in [
        ({"username": "ghost"}, 404, "No such user."),
        ({"email": "MIA@example.test"}, 409, "Already a member of this organization."),
        ({}, 422, "Give a username or an email, exactly one."),
        ({"username": "newton", "role": "owner"}, 422, "Select a valid choice."),  # not an owner
    ]:
        resp = browser.post(url, {"role": "member", **form, **csrf(browser)})
        assert resp.status_code == status and text in resp.content.decode(), (
            form,
            resp.status_code,
        )
    # a member posting the form is refused by the function
    plain = api(team["member"])
    resp = plain.post(url, {"username": "newton", "role": "member", **csrf(plain)})
    assert resp.status_code == 403


def test_changing_roles_and_removing_from_the_page(api, team):
    org = team["org"].pk
    owner = api(team["owner"])
    mia = row_of(team, team["member"])
    resp = owner.post(f"/orgs/{org}/members/{mia}/role/", {"role": "admin", **csrf(owner)})
    assert resp.status_code == 302 and Membership.objects.get(pk=mia).role == "admin"
    # the only owner stepping down: refused, and the page says why
    own = row_of(team, team["owner"])
    resp = owner.post(f"/orgs/{org}/members/{own}/role/", {"role": "member", **csrf(owner)})
    assert resp.status_code == 409 and "An organization needs an owner" in resp.content.decode()
    resp = owner.post(f"/orgs/{org}/members/{own}/role/", {"role": "boss", **csrf(owner)})
    assert resp.status_code == 422
    # an admin cannot remove the owner
    admin = api(team["admin"])
    resp = admin.post(f"/orgs/{org}/members/{own}/remove/", csrf(admin))
    assert resp.status_code == 403 and "Only an owner removes an owner." in resp.content.decode()
    resp = owner.post(f"/orgs/{org}/members/{mia}/remove/", csrf(owner))
    assert resp.status_code == 302 and not Membership.objects.filter(pk=mia).exists()


def test_leaving_from_the_page_goes_home(api, team):
    org = team["org"].pk
    browser = api(team["admin"])
    resp = browser.post(f"/orgs/{org}/members/{row_of(team, team['admin'])}/remove/", csrf(browser))
    assert resp.status_code == 302 and resp["Location"] == "/"
    assert browser.get(f"/orgs/{org}/members/").status_code == 403


def test_outsiders_get_403_on_the_new_pages(api, team, make_user, make_org):
    outsider = make_user("otto")
    make_org(outsider)
    browser = api(outsider)
    org = team["org"].pk
    mia = row_of(team, team["member"])
    assert browser.get(f"/orgs/{org}/members/").status_code == 403
    assert browser.get(f"/orgs/{org}/settings/").status_code == 403
    for path, form in [
        (f"/orgs/{org}/members/", {"username": "newton", "role": "member"}),
        (f"/orgs/{org}/members/{mia}/role/", {"role": "admin"}),
        (f"/orgs/{org}/members/{mia}/remove/", {}),
        (f"/orgs/{org}/settings/", {"name": "Mine"}),
    ]:
        assert browser.post(path, {**form, **csrf(browser)}).status_code == 403, path
    assert Membership.objects.get(pk=mia).role == "member"
    assert Organization.objects.get(pk=org).name == "Team"


# --- settings ------------------------------------------------------------------------------------


def test_settings_page_is_a_form_for_managers_and_read_only_for_members(api, team):
    Organization.objects.filter(pk=team["org"].pk).update(
        settings={"timeZone": "Asia/Tokyo", "digest": True}
    )
    url = f"/orgs/{team['org'].pk}/settings/"
    managed = api(team["admin"]).get(url).content.decode()
    assert 'data-rx-fragment="agency.organization_settings"' in managed
    assert 'id="settings-form"' in managed
    assert '<option value="Asia/Tokyo" selected>' in managed
    assert "&quot;digest&quot;: true" in managed and "timeZone" not in managed.split("<textarea")[1]
    read = api(team["member"]).get(url).content.decode()
    assert 'id="settings-form"' not in read and 'id="settings-view"' in read
    assert "Asia/Tokyo" in read and "&quot;digest&quot;: true" in read


def test_saving_settings_from_the_page(api, team):
    org = team["org"]
    Organization.objects.filter(pk=org.pk).update(settings={"digest": True})
    browser = api(team["owner"])
    url = f"/orgs/{org.pk}/settings/"
    form = {"name": "Team", "time_zone": "Europe/Paris", "settings": '{"digest": false}'}
    resp = browser.post(url, {**form, **csrf(browser)})
    assert resp.status_code == 302 and resp["Location"] == url
    org.refresh_from_db()
    assert org.settings == {"digest": False, "timeZone": "Europe/Paris"} and org.name == "Team"
    # the time zone back to the default: the key goes
    resp = browser.post(url, {**form, "time_zone": "", **csrf(browser)})
    org.refresh_from_db()
    assert resp.status_code == 302 and org.settings == {"digest": False}
    too_deep = json.dumps({"a": {"b": {"c": {"d": {"e": {}}}}}})
    for bad, text in [
        ({"settings": "[1]"}, "Enter a JSON object."),
        ({"settings": too_deep}, "At most 5 levels of nesting."),
        ({"time_zone": "Mars/Base"}, "Select a valid choice."),
        ({"name": ""}, "This field is required."),
    ]:
        resp = browser.post(url, {**form, **bad, **csrf(browser)})
        assert resp.status_code == 422 and text in resp.content.decode(), bad
    org.refresh_from_db()
    assert org.settings == {"digest": False}
    plain = api(team["member"])
    assert plain.post(url, {**form, "name": "Mine", **csrf(plain)}).status_code == 403


# --- the organization page's message form, and the catalogs in the forms ----------------------------


def test_the_message_form_is_live_and_lists_the_agents(api, team):
    org = team["org"]
    MessageType.objects.create(slug="task", name="Task")
    browser = api(team["member"])
    page = browser.get(f"/orgs/{org.pk}/").content.decode()
    assert 'data-rx-fragment="agency.message_form"' in page
    assert "Create an agent first" in page
    Agent.objects.create(organization=org, name="Ada", role="r")
    frag = browser.get("/reactive/fragments/agency.message_form", {"organization_id": str(org.pk)})
    body = frag.json()
    assert f"agency.agent:organization_id={org.pk}" in body["tags"]
    assert "agency.messagetype" in body["tags"]
    assert ">Ada</option>" in body["html"] and ">Task</option>" in body["html"]
    # a refused post shows the bound form in place of the live one
    resp = browser.post(f"/orgs/{org.pk}/messages/new/", {"content": "", **csrf(browser)})
    assert resp.status_code == 422 and 'data-rx-fragment="agency.message_form"' not in (
        resp.content.decode()
    )


def test_the_tool_form_offers_the_tool_types(api, team):
    ToolType.objects.create(slug="search", name="Web search")
    page = api(team["member"]).get(f"/orgs/{team['org'].pk}/tools/new/").content.decode()
    assert '<option value="search">Web search</option>' in page
