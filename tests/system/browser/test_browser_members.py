"""Members in a real browser: a manager adds someone, changes their role and removes them,
and the pages of everyone concerned follow without a reload; the organization page's
sender list follows the agents."""

from __future__ import annotations

import pytest

from agency.models import Agent, Membership
from tests.system.browser.conftest import WAIT_MS, needs_chromium, rx, wait_connected

pytestmark = [pytest.mark.django_db(transaction=True), needs_chromium]


@pytest.fixture
def team(make_user, make_org):
    """Alice owns Acme, Carol is its admin; Bob belongs nowhere yet."""
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    org = make_org(alice, name="Acme")
    Membership.objects.create(user=carol, organization=org, role="admin")
    return {"alice": alice, "bob": bob, "carol": carol, "org": org}


def mark_no_reload(page) -> None:
    page.evaluate("window.__sameDocument = true")


def assert_not_reloaded(page) -> None:
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"


def wait_text(page, selector: str, text: str, present: bool = True) -> None:
    """Until `text` is (or is no longer) inside `selector`."""
    check = f"(document.querySelector({selector!r})?.textContent || '').includes({text!r})"
    page.wait_for_function(check if present else f"!{check}", timeout=WAIT_MS)


def test_a_manager_adds_a_member_and_both_pages_follow(person, team):
    org = team["org"]
    alice, bob, carol = person(team["alice"]), person(team["bob"]), person(team["carol"])
    manager = alice.open(f"/orgs/{org.pk}/members/")
    watcher = carol.open(f"/orgs/{org.pk}/members/")
    newcomer = bob.open("/")
    for page in (manager, watcher, newcomer):
        wait_connected(page)
    assert "not a member of any organization" in newcomer.locator("main").inner_text()
    for page in (watcher, newcomer):
        mark_no_reload(page)

    manager.fill("#id_username", "bob")
    manager.click("#member-form button[type=submit]")
    manager.wait_for_url(f"**/orgs/{org.pk}/members/")
    wait_text(manager, "#members", "bob")
    # the other manager's list and the newcomer's organizations, live
    wait_text(watcher, "#members", "bob")
    wait_text(newcomer, "main", "Acme")
    assert newcomer.locator(".org-cards .badge").inner_text() == "member"
    for page in (watcher, newcomer):
        assert_not_reloaded(page)

    # Bob looks at the members: the list and a Leave button, no management controls
    own = bob.open(f"/orgs/{org.pk}/members/")
    wait_connected(own)
    mark_no_reload(own)
    assert own.locator("#my-role").inner_text() == "member"
    assert own.locator("#member-form").count() == 0
    assert own.locator("#members select").count() == 0
    assert own.locator("#members button:has-text('Leave')").count() == 1
    assert own.locator("#members button:has-text('Remove')").count() == 0

    # Alice makes him admin: his page grows the controls an admin has
    row = manager.locator("#members tr[data-username='bob']")
    row.locator("select").select_option("admin")
    row.locator("button:has-text('Change')").click()
    manager.wait_for_url(f"**/orgs/{org.pk}/members/")
    wait_text(own, "#my-role", "admin")
    own.locator("#members select").first.wait_for()
    assert own.locator("#members tr[data-username='alice'] select").count() == 0  # the owner's
    assert own.locator("#members tr[data-username='carol'] select").count() == 1
    wait_text(watcher, "#members tr[data-username='bob']", "Change")

    # Alice removes him: his pages lose the organization at once
    manager.on("dialog", lambda dialog: dialog.accept())
    manager.locator("#members tr[data-username='bob'] button:has-text('Remove')").click()
    manager.wait_for_url(f"**/orgs/{org.pk}/members/")
    wait_text(own, "#members", "You do not have access")
    wait_text(newcomer, "main", "Acme", present=False)
    wait_text(watcher, "#members", "bob", present=False)
    for page in (own, newcomer, watcher):
        assert_not_reloaded(page)


def test_the_sender_list_follows_the_agents(person, team, api_as):
    org = team["org"]
    page = person(team["carol"]).open(f"/orgs/{org.pk}/")
    wait_connected(page)
    mark_no_reload(page)
    assert "Create an agent first" in page.locator("#post-message").inner_text()
    agent = rx(
        api_as(team["alice"]),
        "agents.create",
        {"organizationId": str(org.pk), "name": "Scout", "role": "r"},
    )
    page.locator("#id_from_agent_id option:has-text('Scout')").wait_for(state="attached")
    rx(api_as(team["alice"]), "agents.update", {"id": agent["id"], "data": {"name": "Ranger"}})
    wait_text(page, "#id_from_agent_id", "Ranger")
    wait_text(page, "#id_to_agent_id", "Ranger")
    assert "Scout" not in page.locator("#id_from_agent_id").inner_text()
    assert_not_reloaded(page)
    # what the page posts is from the renamed agent
    page.fill("#id_content", "hello from the ranger")
    page.click("#message-form button[type=submit]")
    page.wait_for_url(f"**/orgs/{org.pk}/")
    wait_text(page, "#messages", "hello from the ranger")
    assert Agent.objects.get(pk=agent["id"]).sent_messages.count() == 1
