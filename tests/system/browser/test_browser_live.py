"""Pages in a real browser stay fresh: other members' changes, reconnects, the client cache."""

from __future__ import annotations

import time
import uuid

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from agency.models import Agent
from tests.system.browser.conftest import WAIT_MS, needs_chromium, rx, wait_connected

pytestmark = [pytest.mark.django_db(transaction=True), needs_chromium]

SEEN_WITHIN_MS = 1000


@pytest.fixture
def team(make_user, make_org):
    """Alice (owner) and Bob (member) of one organization; Carol outside, in her own."""
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    org = make_org(alice, bob, name="Acme")
    other = make_org(carol, name="Carol's")
    agent = Agent.objects.create(organization=org, name="Atlas", role="coordinator")
    return {"alice": alice, "bob": bob, "carol": carol, "org": org, "other": other, "agent": agent}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def watch_for(page, selector: str, needle: str) -> None:
    """Record in the page the wall-clock time `needle` first appears inside `selector`."""
    page.evaluate(
        """([selector, needle]) => {
            window.__seenAt = null;
            const check = () => {
                const el = document.querySelector(selector);
                if (!window.__seenAt && el && el.textContent.includes(needle)) {
                    window.__seenAt = Date.now();
                }
            };
            new MutationObserver(check).observe(document.body, {
                subtree: true, childList: true, characterData: true,
            });
            check();
        }""",
        [selector, needle],
    )


def mark_no_reload(page) -> None:
    page.evaluate("window.__sameDocument = true")


def assert_not_reloaded(page) -> None:
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"


@pytest.mark.parametrize("transport", ["ws", "sse"])
def test_a_change_by_one_member_appears_on_the_others_page_within_a_second(person, team, transport):
    org = team["org"]
    alice, bob = person(team["alice"]), person(team["bob"])
    writer = alice.open(f"/orgs/{org.pk}/agents/new/")
    # With WebSocket blocked, the client must fall back to Server-Sent Events.
    reader = bob.open(f"/orgs/{org.pk}/", block_websocket=transport == "sse")
    wait_connected(reader, transport)
    name = unique("Nova")
    watch_for(reader, "#agents", name)
    mark_no_reload(reader)

    writer.fill("#id_name", name)
    writer.fill("#id_role", "tester")
    clicked_at = writer.evaluate("Date.now()")
    writer.click("button:has-text('Create agent')")

    reader.wait_for_function("window.__seenAt !== null", timeout=WAIT_MS)
    delay = reader.evaluate("window.__seenAt") - clicked_at
    assert delay < SEEN_WITHIN_MS, f"Bob saw the new agent {delay} ms after Alice clicked"
    assert_not_reloaded(reader)
    assert reader.locator(f"#agents tr:has-text('{name}') .badge").inner_text() == "active"
    # and the writer landed on the new agent's page
    writer.wait_for_url("**/agents/*/")
    assert writer.locator("#agent-detail .agent-title").inner_text() == name


def test_a_non_member_never_sees_it(person, team, api_as):
    org, other = team["org"], team["other"]
    bob, carol = person(team["bob"]), person(team["carol"])
    member_page = bob.open(f"/orgs/{org.pk}/")
    carol_page = carol.open(f"/orgs/{other.pk}/")
    carol_live = carol.open(f"/orgs/{other.pk}/live/")
    for page in (member_page, carol_page, carol_live):
        wait_connected(page)
    secret = unique("Secret")

    rx(
        api_as(team["alice"]),
        "agents.create",
        {"organizationId": str(org.pk), "name": secret, "role": "r"},
    )

    member_page.wait_for_function(
        f"document.querySelector('#agents').textContent.includes('{secret}')", timeout=WAIT_MS
    )
    # Bob has it; by then Carol's pages would have it too if anything leaked.
    carol_live.wait_for_function("window.reactive.stats.fetches > 0")
    assert secret not in carol_page.content()
    assert secret not in carol_live.content()
    assert carol_live.evaluate("window.reactive.stats.events") == 0
    assert str(org.pk) not in carol_live.locator("#live-event-rows").inner_text()
    # ... and cannot look: the page, the fragment endpoint and the API all say 403.
    response = carol_page.goto(f"{carol.server.url}/orgs/{org.pk}/")
    assert response.status == 403
    assert secret not in carol_page.content()
    fragment = carol_page.request.get(
        f"{carol.server.url}/reactive/fragments/agency.agents?organization_id={org.pk}"
    )
    assert fragment.status == 403
    api = carol_page.request.get(f"{carol.server.url}/api/rx/agents.getAll?organizationId={org.pk}")
    assert api.status == 403
    events = carol_page.request.get(f"{carol.server.url}/api/events?organizationId={org.pk}")
    assert events.status == 403


@pytest.mark.parametrize(
    ("page_kind", "transport"), [("fragments", "ws"), ("subscribe", "ws"), ("fragments", "sse")]
)
def test_the_page_catches_up_after_the_network_drops_and_returns(
    person, team, api_as, page_kind, transport
):
    org, agent = team["org"], team["agent"]
    bob = person(team["bob"])
    path = f"/orgs/{org.pk}/" if page_kind == "fragments" else f"/orgs/{org.pk}/live/"
    area = "#agents" if page_kind == "fragments" else "#live-agents"
    page = bob.open(path, block_websocket=transport == "sse")
    wait_connected(page, transport)
    if page_kind == "subscribe":
        page.wait_for_function(
            "document.getElementById('live-agents-state').dataset.state === 'fresh'"
        )
    mark_no_reload(page)

    bob.context.set_offline(True)
    page.wait_for_function("document.documentElement.dataset.rxState === 'offline'")
    alice = api_as(team["alice"])
    created, renamed = unique("Missed"), unique("Renamed")
    rx(alice, "agents.create", {"organizationId": str(org.pk), "name": created, "role": "r"})
    rx(alice, "agents.update", {"id": str(agent.pk), "data": {"name": renamed}})
    assert created not in page.locator(area).inner_text()  # it really was offline

    bob.context.set_offline(False)
    page.wait_for_function(
        """([area, created, renamed]) => {
            const text = document.querySelector(area).textContent;
            return text.includes(created) && text.includes(renamed) && !text.includes('Atlas');
        }""",
        arg=[area, created, renamed],
        timeout=15_000,
    )
    wait_connected(page, transport)
    assert_not_reloaded(page)
    if page_kind == "subscribe":
        assert page.evaluate("window.reactive.stats.reconnects") >= 1


def test_cached_data_is_painted_before_the_network_answers(person, team, api_as):
    org = team["org"]
    bob = person(team["bob"])
    first = bob.open(f"/orgs/{org.pk}/live/")
    first.wait_for_function(
        "document.getElementById('live-agents-state').dataset.state === 'fresh'"
    )
    keys = first.evaluate("Object.keys(localStorage).filter((k) => k.startsWith('rx1:'))")
    assert f"rx1:{team['bob'].pk}:{org.pk}:agents.getAll?" in " ".join(keys)

    # A second visit (in another tab: tabs share the cache) while the API is held back.
    held = []
    bob.context.route("**/api/rx/agents.getAll*", lambda route: held.append(route))
    later = unique("Later")
    rx(
        api_as(team["alice"]),
        "agents.create",
        {"organizationId": str(org.pk), "name": later, "role": "r"},
    )
    second = bob.open(f"/orgs/{org.pk}/live/")
    second.wait_for_function(
        "document.getElementById('live-agents').textContent.includes('Atlas')", timeout=WAIT_MS
    )
    state = second.evaluate("document.getElementById('live-agents-state').dataset.state")
    assert state == "stale"  # shown from the cache, being revalidated
    assert held, "the query was not sent"
    assert later not in second.locator("#live-agents").inner_text()

    for route in held:
        route.continue_()
    bob.context.unroute("**/api/rx/agents.getAll*")  # (later requests go straight through)
    second.wait_for_function(
        """(later) => document.getElementById('live-agents').textContent.includes(later)
            && document.getElementById('live-agents-state').dataset.state === 'fresh'""",
        arg=later,
        timeout=WAIT_MS,
    )
    assert second.evaluate("window.reactive.stats.localHits") >= 1


@pytest.mark.parametrize("transport", ["ws", "sse"])
def test_an_invalidation_during_an_in_flight_fetch_forces_a_fresh_fetch(
    person, team, api_as, transport
):
    org = team["org"]
    bob = person(team["bob"])
    page = bob.open(f"/orgs/{org.pk}/live/", block_websocket=transport == "sse")
    page.wait_for_function("document.getElementById('live-agents-state').dataset.state === 'fresh'")
    wait_connected(page, transport)
    requests: list[str] = []
    page.on("request", lambda r: "/api/rx/agents.getAll" in r.url and requests.append(r.url))
    held = []

    def hold_first(route):
        if held:
            route.continue_()
        else:
            held.append((route, route.fetch()))  # answered by the server now, delivered later

    page.route("**/api/rx/agents.getAll*", hold_first)
    alice = api_as(team["alice"])
    first, second = unique("First"), unique("Second")
    rx(alice, "agents.create", {"organizationId": str(org.pk), "name": first, "role": "r"})
    page.wait_for_function("window.reactive.stats.events >= 1")
    deadline = time.monotonic() + WAIT_MS / 1000
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(20)  # lets Playwright run the route handler
    assert held, "the refetch after the first event was not sent"

    # The second change arrives while the first refetch's answer is still on its way.
    rx(alice, "agents.create", {"organizationId": str(org.pk), "name": second, "role": "r"})
    page.wait_for_function("window.reactive.stats.events >= 2")
    route, response = held[0]
    route.fulfill(response=response)

    page.wait_for_function(
        "(name) => document.getElementById('live-agents').textContent.includes(name)",
        arg=second,
        timeout=WAIT_MS,
    )
    text = page.locator("#live-agents").inner_text()
    assert first in text and second in text
    assert len(requests) >= 2


def test_the_edit_form_keeps_focus_and_typing_while_it_rerenders(person, team, api_as):
    agent = team["agent"]
    bob = person(team["bob"])
    page = bob.open(f"/agents/{agent.pk}/")
    wait_connected(page)
    page.click("#id_role")
    page.keyboard.type(" and reviewer")
    page.click("#id_model")  # the edited role field loses focus but keeps what Bob typed
    page.keyboard.type("gpt-4")
    renamed = unique("Atlas")

    rx(api_as(team["alice"]), "agents.update", {"id": str(agent.pk), "data": {"name": renamed}})

    page.wait_for_function(
        "(name) => document.querySelector('#agent-detail .agent-title').textContent === name",
        arg=renamed,
    )
    page.wait_for_function(
        "(name) => document.getElementById('id_name').value === name", arg=renamed
    )
    assert page.input_value("#id_role") == "coordinator and reviewer"
    assert page.input_value("#id_model") == "gpt-4"
    assert page.evaluate("document.activeElement.id") == "id_model"
    page.keyboard.type("o")  # the caret is still where Bob left it
    assert page.input_value("#id_model") == "gpt-4o"

    with page.expect_navigation():
        page.click("#agent-form button[type=submit]")
    agent.refresh_from_db()
    assert (agent.name, agent.role, agent.model) == (renamed, "coordinator and reviewer", "gpt-4o")


def test_logout_clears_the_cache_in_every_tab(person, team):
    org = team["org"]
    bob = person(team["bob"])
    page = bob.open(f"/orgs/{org.pk}/live/")
    other_tab = bob.open(f"/orgs/{org.pk}/")
    page.wait_for_function("document.getElementById('live-agents-state').dataset.state === 'fresh'")
    stored = "Object.keys(localStorage).filter((k) => k.startsWith('rx1:')).length"
    assert page.evaluate(stored) > 0

    page.click("header button:has-text('Log out')")
    page.wait_for_url("**/login/")
    assert page.evaluate(stored) == 0
    other_tab.wait_for_url("**/login/")  # told over the BroadcastChannel
    assert other_tab.evaluate(stored) == 0


def test_logging_in_with_the_form_and_seeing_the_organizations(person, team, make_user):
    dana = make_user("dana")
    # Hashed the way the server process checks passwords (cheaply: 1000 iterations).
    dana.password = PBKDF2PasswordHasher().encode("correct horse", "saltsalt1234", 1000)
    dana.save()
    team["org"].memberships.create(user=dana, role="member")
    visitor = person(None)
    page = visitor.open("/")
    assert "/login/" in page.url
    page.fill("#id_username", "dana")
    page.fill("#id_password", "wrong")
    page.click("#login-form button[type=submit]")
    assert "Please enter a correct username and password" in page.locator(".flash").inner_text()

    page.fill("#id_username", "dana")
    page.fill("#id_password", "correct horse")
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"{visitor.server.url}/")
    assert page.locator(".org-cards").inner_text().count("Acme") == 1
    wait_connected(page)


def test_reconnecting_never_gives_up(person, team, api_as):
    org = team["org"]
    bob = person(team["bob"])
    refused = []

    def refuse_then_accept(ws):
        if len(refused) < 4:
            refused.append(ws.url)
            ws.close()  # as a server that is down or restarting would
        else:
            ws.connect_to_server()

    bob.context.route_web_socket("**/ws/reactive/", refuse_then_accept)
    page = bob.open(f"/orgs/{org.pk}/live/?transport=ws")
    page.wait_for_function(
        "document.documentElement.dataset.rxState === 'connected'", timeout=30_000
    )
    assert len(refused) == 4
    name = unique("After")
    rx(
        api_as(team["alice"]),
        "agents.create",
        {"organizationId": str(org.pk), "name": name, "role": "r"},
    )
    page.wait_for_function(
        "(name) => document.getElementById('live-agents').textContent.includes(name)", arg=name
    )


def test_the_persisted_cache_is_bounded_and_namespaced(person):
    page = person(None).open("/login/")
    result = page.evaluate(
        """async () => {
            const { PersistentCache, backoff } = await import("/static/reactive/client.js");
            const cache = new PersistentCache({ user: "u1", maxEntries: 3, maxBytes: 100000 });
            for (let i = 0; i < 5; i++) {
                cache.write("org1", `q${i}`, { d: i, t: [], c: String(i) });
                await new Promise((r) => setTimeout(r, 2));
            }
            const other = new PersistentCache({ user: "u2" });
            other.write("org1", "q0", { d: "theirs", t: [], c: "1" });
            const big = new PersistentCache({ user: "u3", maxBytes: 20000 });
            for (let i = 0; i < 10; i++) big.write("o", `b${i}`, { d: "x".repeat(1500) });
            const bigKeys = Object.keys(localStorage).filter((k) => k.startsWith("rx1:u3:"));
            const kept = Object.keys(localStorage).filter((k) => k.startsWith("rx1:u1:")).sort();
            const delays = Array.from({ length: 40 }, (_, i) => backoff(i));
            const mine = cache.read("org1", "q0");
            cache.clearUser();
            return {
                kept,
                mine,
                theirs: other.read("org1", "q0").d,
                bigBytes: bigKeys.reduce(
                    (n, k) => n + (k.length + localStorage.getItem(k).length) * 2, 0),
                bigCount: bigKeys.length,
                afterClear: Object.keys(localStorage).filter((k) => k.startsWith("rx1:u1:")).length,
                maxDelay: Math.max(...delays),
                minDelay: Math.min(...delays),
            };
        }"""
    )
    assert result["kept"] == ["rx1:u1:org1:q2", "rx1:u1:org1:q3", "rx1:u1:org1:q4"]
    assert result["mine"] is None and result["theirs"] == "theirs"
    assert 0 < result["bigCount"] < 10 and result["bigBytes"] <= 20000
    assert result["afterClear"] == 0
    assert result["minDelay"] > 0 and result["maxDelay"] <= 30_000


@pytest.mark.parametrize("transport", ["ws", "sse"])
def test_an_answer_older_than_an_applied_event_does_not_loop(person, team, api_as, transport):
    """A cache hit may answer the cursor of an entry computed just before an event was
    logged (its data already includes the change): one refetch, not a loop."""
    org = team["org"]
    bob = person(team["bob"])
    page = bob.open(f"/orgs/{org.pk}/live/", block_websocket=transport == "sse")
    page.wait_for_function("document.getElementById('live-agents-state').dataset.state === 'fresh'")
    wait_connected(page, transport)
    before = page.evaluate(
        "(org) => window.reactive.getQuery('agents.getAll', {organizationId: org, limit: 50}).cursor",
        str(org.pk),
    )
    fetched: list[str] = []

    def old_cursor(route):
        response = route.fetch()
        body = response.json()
        fetched.append(body["cursor"])
        # The cursor read before the change, as a racing reader's entry would carry.
        route.fulfill(response=response, json={**body, "cursor": before})

    page.route("**/api/rx/agents.getAll*", old_cursor)
    name = unique("Once")
    rx(
        api_as(team["alice"]),
        "agents.create",
        {"organizationId": str(org.pk), "name": name, "role": "r"},
    )
    page.wait_for_function(
        "(name) => document.getElementById('live-agents').textContent.includes(name)", arg=name
    )
    page.wait_for_timeout(1500)  # an absence: give a loop time to show itself
    assert len(fetched) <= 2, f"{len(fetched)} refetches for one change"
