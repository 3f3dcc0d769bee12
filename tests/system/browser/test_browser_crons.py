"""Crons in a real browser: the preview follows the schedule as it is typed, a cron is added,
and a run of the scheduler (another process) shows on the page without a reload."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from agency.models import Cron
from tests.live import ROOT, server_env
from tests.system.browser.conftest import WAIT_MS, needs_chromium, wait_connected

pytestmark = [pytest.mark.django_db(transaction=True), needs_chromium]


def wait_text(page, selector: str, text: str) -> None:
    check = f"(document.querySelector({selector!r})?.textContent || '').includes({text!r})"
    page.wait_for_function(check, timeout=WAIT_MS)


def test_the_preview_follows_the_schedule_and_a_cron_is_added(person, alice, org_a, agent_a):
    org_a.settings = {"timeZone": "Asia/Tokyo"}
    org_a.save()
    page = person(alice).open(f"/orgs/{org_a.pk}/")
    wait_connected(page)
    assert "Every fifth minute" in page.locator("#cron-preview").inner_text()  # the initial one
    page.fill("#cron-form [name=schedule]", "30 8 * * 1-5")
    wait_text(page, "#cron-preview", "At 08:30 on Monday through Friday")
    assert "Asia/Tokyo" in page.locator("#cron-preview").inner_text()
    assert page.locator("#cron-preview li").count() == 5
    page.fill("#cron-form [name=schedule]", "61 * * * *")
    wait_text(page, "#cron-preview", "Invalid cron expression")
    page.fill("#cron-form [name=schedule]", "0 7 * * *")
    page.fill("#cron-form [name=content]", "Morning report")
    page.click("#cron-form button[type=submit]")
    page.wait_for_url(f"**/orgs/{org_a.pk}/#crons")
    cron = Cron.objects.get()
    row = page.locator(f"#cron-{cron.pk}")
    assert "0 7 * * *" in row.inner_text() and "Morning report" in row.inner_text()
    # Disable, from the list's button: the row follows (the write's own event).
    row.locator("button:has-text('Disable')").click()
    wait_text(page, f"#cron-{cron.pk}", "disabled")
    cron.refresh_from_db()
    assert cron.enabled is False


def test_a_run_of_the_scheduler_shows_on_the_pages_live(person, alice, org_a, agent_a):
    cron = Cron.objects.create(
        organization=org_a,
        agent=agent_a,
        schedule="* * * * *",
        payload={"content": "Scheduled hello"},
        armed_at=datetime.now(UTC) - timedelta(minutes=2),
    )
    browser = person(alice)
    pages = [browser.open(f"/orgs/{org_a.pk}/"), browser.open(f"/agents/{agent_a.pk}/")]
    for page in pages:
        wait_connected(page)
        assert "never" in page.locator(f"#cron-{cron.pk} .cron-last").inner_text()
        page.evaluate("window.__sameDocument = true")
    scheduler = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "run_scheduler", "--max-sleep", "600"],
        cwd=ROOT,
        env=server_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for page in pages:
            page.locator(f"#cron-{cron.pk} .cron-last time").wait_for(timeout=WAIT_MS)
            wait_text(
                page, "#messages" if "/orgs/" in page.url else "#agent-messages", "Scheduled hello"
            )
            assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    finally:
        scheduler.send_signal(signal.SIGTERM)
        assert scheduler.wait(WAIT_MS / 1000) == 0
    cron.refresh_from_db()
    shown = pages[0].locator(f"#cron-{cron.pk} .cron-last time").get_attribute("datetime")
    assert shown == cron.last_run_at.isoformat()
