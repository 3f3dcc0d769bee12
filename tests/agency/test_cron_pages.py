"""The crons on the pages: the live list, the add form, its next-run preview."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from agency.models import Agent, Cron
from agency.scheduler import Scheduler

pytestmark = pytest.mark.django_db(transaction=True)

JAN = datetime(2030, 1, 7, 10, 30, tzinfo=UTC)


def csrf(client: Client) -> dict[str, str]:
    return {"csrfmiddlewaretoken": client.cookies["csrftoken"].value}


@pytest.fixture
def member(api, alice):
    return api(alice)


def fragment(client: Client, name: str, **params: str) -> dict:
    response = client.get(f"/reactive/fragments/{name}", params)
    assert response.status_code == 200, response.content
    return response.json()


def test_the_organization_and_agent_pages_have_live_crons_and_a_form(member, org_a, agent_a):
    Cron.objects.create(
        organization=org_a,
        agent=agent_a,
        schedule="0 9 * * 1-5",
        name="standup",
        payload={"content": "Plan the day"},
    )
    for path in (f"/orgs/{org_a.pk}/", f"/agents/{agent_a.pk}/"):
        page = member.get(path).content.decode()
        assert 'data-rx-fragment="agency.crons"' in page
        assert 'data-rx-fragment="agency.cron_form"' in page
        assert "0 9 * * 1-5" in page and "standup" in page and "Plan the day" in page
        assert "At 09:00 on Monday through Friday" in page
        assert f'action="/orgs/{org_a.pk}/crons/new/"' in page
        assert f'data-cron-preview="/orgs/{org_a.pk}/crons/preview/"' in page
        assert 'data-rx-mutate="crons.update"' in page and 'data-rx-mutate="crons.delete"' in page
    agent_page = member.get(f"/agents/{agent_a.pk}/").content.decode()
    assert 'name="back" value="agent"' in agent_page


def test_the_list_shows_runs_in_the_organization_time_zone_and_follows_writes(
    member, org_a, agent_a
):
    org_a.settings = {"timeZone": "Europe/Berlin"}
    org_a.save()
    cron = Cron.objects.create(
        organization=org_a, agent=agent_a, schedule="0 12 * * *", armed_at=JAN
    )
    shown = fragment(member, "agency.crons", organization_id=str(org_a.pk))
    assert "times in Europe/Berlin" in shown["html"]
    assert "Mon 7 Jan, 12:00" in shown["html"]  # 11:00 UTC, the first noon after 10:30 UTC
    assert "never" in shown["html"] and "badge warn" not in shown["html"]  # not due yet
    assert f"agency.cron:organization_id={org_a.pk}" in shown["tags"]
    # A run (by the scheduler, here in process) is a write to the list's tags.
    scheduler = Scheduler(now=lambda: datetime(2030, 1, 7, 11, 0, 5, tzinfo=UTC))
    try:
        assert scheduler.tick() == 1
    finally:
        scheduler.close()
    cron.refresh_from_db()
    again = fragment(member, "agency.crons", organization_id=str(org_a.pk))
    row = re.search(rf'<tr id="cron-{cron.pk}">.*?</tr>', again["html"], re.S)[0]
    assert 'class="cron-last"><time datetime="2030-01-07T11:00:00+00:00">Mon 7 Jan, 12:00' in row
    assert "Tue 8 Jan, 12:00" in row


def test_a_cron_past_its_next_run_shows_as_due(member, org_a, agent_a):
    armed = datetime.now(UTC) - timedelta(minutes=2)
    Cron.objects.create(organization=org_a, agent=agent_a, schedule="* * * * *", armed_at=armed)
    Cron.objects.create(organization=org_a, agent=agent_a, schedule="0 0 1 1 *", enabled=False)
    html = fragment(member, "agency.crons", organization_id=str(org_a.pk))["html"]
    assert html.count('<span class="badge warn"') == 1 and html.count(">disabled<") == 1


def test_the_agent_list_shows_only_that_agents_crons(member, org_a, agent_a):
    other = Agent.objects.create(organization=org_a, name="Iris", role="analyst")
    Cron.objects.create(organization=org_a, agent=agent_a, schedule="1 * * * *")
    Cron.objects.create(organization=org_a, agent=other, schedule="2 * * * *")
    mine = fragment(member, "agency.crons", organization_id=str(org_a.pk), agent_id=str(agent_a.pk))
    assert "1 * * * *" in mine["html"] and "2 * * * *" not in mine["html"]
    everyone = fragment(member, "agency.crons", organization_id=str(org_a.pk))
    assert "1 * * * *" in everyone["html"] and "Iris" in everyone["html"]


def test_the_form_choices_follow_the_agents(member, org_a, agent_a):
    shown = fragment(member, "agency.cron_form", organization_id=str(org_a.pk))
    assert "Agent A" in shown["html"]
    assert f"agency.agent:organization_id={org_a.pk}" in shown["tags"]
    Agent.objects.create(organization=org_a, name="Newcomer", role="r")
    assert "Newcomer" in fragment(member, "agency.cron_form", organization_id=str(org_a.pk))["html"]


def test_adding_a_cron_from_the_organization_page(member, org_a, agent_a):
    form = {
        "agent_id": str(agent_a.pk),
        "schedule": "*/10 * * * *",
        "name": "ten",
        "content": "Check the queue",
        "payload": '{"priority": "high"}',
        "enabled": "on",
    }
    response = member.post(f"/orgs/{org_a.pk}/crons/new/", {**form, **csrf(member)})
    assert response.status_code == 302 and response["Location"] == f"/orgs/{org_a.pk}/#crons"
    cron = Cron.objects.get()
    assert (cron.agent_id, cron.schedule, cron.name, cron.enabled) == (
        agent_a.pk,
        "*/10 * * * *",
        "ten",
        True,
    )
    assert cron.payload == {"priority": "high", "content": "Check the queue"}


def test_adding_a_disabled_cron_from_the_agent_page_goes_back_there(member, org_a, agent_a):
    form = {"agent_id": str(agent_a.pk), "schedule": "0 * * * *", "back": "agent"}
    response = member.post(f"/orgs/{org_a.pk}/crons/new/", {**form, **csrf(member)})
    assert response.status_code == 302 and response["Location"] == f"/agents/{agent_a.pk}/#crons"
    assert Cron.objects.get().enabled is False  # an unchecked box


@pytest.mark.parametrize(
    "change,field,says",
    [
        ({"schedule": "61 * * * *"}, "schedule", "Invalid cron expression"),
        ({"schedule": "* * *"}, "schedule", "five fields"),
        ({"payload": "[1, 2]"}, "payload", "Enter a JSON object."),
        ({"payload": '{"k": ' * 9 + "1" + "}" * 9}, "payload", "nested deeper than 8 levels"),
        ({"agent_id": "00000000-0000-0000-0000-000000000000"}, "agent_id", "Select a valid"),
    ],
)
def test_form_errors_are_shown_with_the_preview(member, org_a, agent_a, change, field, says):
    form = {"agent_id": str(agent_a.pk), "schedule": "0 9 * * *", "enabled": "on", **change}
    response = member.post(f"/orgs/{org_a.pk}/crons/new/", {**form, **csrf(member)})
    assert response.status_code == 422
    assert says in response.content.decode()
    assert response.context["form"].errors.keys() == {field}
    assert 'id="cron-preview"' in response.content.decode()
    assert not Cron.objects.exists()


def test_the_preview_lists_the_next_slots_in_the_organization_time_zone(member, org_a):
    org_a.settings = {"timeZone": "Asia/Tokyo"}
    org_a.save()
    response = member.get(f"/orgs/{org_a.pk}/crons/preview/", {"schedule": "30 8 * * *"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "At 08:30 every day" in html and "Asia/Tokyo" in html
    slots = re.findall(r"<li>(.*?)</li>", html)
    assert len(slots) == 5 and all(slot.endswith("08:30") for slot in slots)
    days = [datetime.strptime(s, "%a %d %b %Y, %H:%M") for s in slots]
    assert all(b - a == timedelta(days=1) for a, b in zip(days, days[1:], strict=False))


@pytest.mark.parametrize("schedule", ["61 * * * *", "", "x" * 300, "* * * * * *"])
def test_the_preview_says_why_a_schedule_is_refused(member, org_a, schedule):
    response = member.get(f"/orgs/{org_a.pk}/crons/preview/", {"schedule": schedule})
    assert response.status_code == 422
    assert b"cron-preview-error" in response.content and b"<li>" not in response.content


def test_outsiders_get_403_and_anonymous_visitors_the_login_page(api, bob, org_a, agent_a):
    outsider = api(bob)
    for path in (f"/orgs/{org_a.pk}/crons/new/", f"/orgs/{org_a.pk}/crons/preview/"):
        assert outsider.get(path, {"schedule": "* * * * *"}).status_code == 403
        assert api(None).get(path).status_code == 302
    form = {"agent_id": str(agent_a.pk), "schedule": "* * * * *", **csrf(outsider)}
    assert outsider.post(f"/orgs/{org_a.pk}/crons/new/", form).status_code == 403
    assert not Cron.objects.exists()
    for name in ("agency.crons", "agency.cron_form"):
        response = outsider.get(f"/reactive/fragments/{name}", {"organization_id": str(org_a.pk)})
        assert response.status_code == 403


def test_without_agents_the_form_says_to_create_one_first(member, org_a):
    html = fragment(member, "agency.cron_form", organization_id=str(org_a.pk))["html"]
    assert "Create an agent first" in html and "<form" not in html
