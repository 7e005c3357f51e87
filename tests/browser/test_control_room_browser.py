"""The operator's control room in a real browser: the overview, the hub page, a resync watched to its end, and a dead
letter's payload (issue 13, "Tests")."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import Page, expect

from globalhub.manager.lifecycle import record_transition
from globalhub.manager.models import DeadLetter, Hub, HubTypeStatus, ResyncRequest
from globalhub.protocol.events import EVENT_TYPE_PREFIX, EventType
from tests.browser.helpers import answer_resync, expect_text_after_reloads

pytestmark = pytest.mark.django_db(transaction=True)

# How long a resync may take to show as complete once its answer was ingested (the page is reloaded meanwhile).
RESYNC_WATCH_SECONDS = 60


def hub(name: str, *, heartbeat_age: timedelta = timedelta(seconds=5)) -> Hub:
    """An active hub whose last heartbeat was read ``heartbeat_age`` ago (no probe has judged it since)."""
    now = timezone.now()
    return Hub.objects.create(
        name=name,
        state=Hub.State.ACTIVE,
        state_changed_at=now - timedelta(hours=1),
        last_heartbeat=now - heartbeat_age,
        status_topic=f"gh-status.{name}",
    )


def test_a_hub_whose_heartbeat_is_overdue_shows_overdue_on_the_overview_before_any_probe_runs(
    admin_page: Page,
) -> None:
    timeout = settings.GLOBALHUB.hub_timeout
    hub("hub-quiet", heartbeat_age=3 * timeout)
    hub("hub-fine")

    admin_page.goto("/admin/")
    attention = admin_page.locator("#gh-attention")
    expect(attention).to_contain_text("hub-quiet")
    expect(attention).not_to_contain_text("hub-fine")
    expect(attention.locator(".gh-badge.gh-badge-overdue")).to_have_text("overdue")
    assert Hub.objects.get(name="hub-quiet").state == Hub.State.ACTIVE  # the probe never ran: only its age tells

    admin_page.goto("/admin/manager/hub/")
    quiet = admin_page.locator("#result_list tbody tr", has_text="hub-quiet")
    expect(quiet.locator(".gh-badge.gh-badge-overdue")).to_have_text("overdue")
    fine = admin_page.locator("#result_list tbody tr", has_text="hub-fine")
    expect(fine.locator(".gh-badge")).not_to_have_text("overdue")


def test_a_stalled_type_shows_on_the_overview_and_on_the_hub_page_with_its_reason(admin_page: Page) -> None:
    stuck = hub("hub-stuck")
    kind = EventType.LOCAL_COMPLIANCE
    HubTypeStatus.objects.create(
        hub=stuck,
        event_type=kind.value,
        version="3.1",
        refused=12,
        refused_since=timezone.now() - timedelta(minutes=20),
        last_refusal="version 2.9 is older than the 3.1 already admitted",
        stalled_since=timezone.now() - timedelta(minutes=10),
        stalls=1,
    )

    admin_page.goto("/admin/")
    row = admin_page.locator("#gh-attention tr", has_text="hub-stuck")
    expect(row).to_contain_text("stalled")
    expect(row).to_contain_text(kind.short)

    row.get_by_role("link", name="hub-stuck").click()
    expect(admin_page).to_have_url(re.compile(r"/admin/manager/hub/hub-stuck/"))
    types = admin_page.locator("#gh-types")
    stalled = types.locator(f"tr[data-type='{kind.short}']")
    expect(stalled).to_contain_text("stalled")
    expect(stalled).to_contain_text("version 2.9 is older than the 3.1 already admitted")
    expect(types.locator(f"tr[data-type='{EventType.MANAGED_CLUSTER.short}']")).not_to_contain_text("stalled")
    expect(types).not_to_contain_text(EVENT_TYPE_PREFIX)  # short names, not the 70-character CloudEvent types


def test_a_resync_requested_from_the_hub_page_is_watched_until_it_completes(admin_page: Page) -> None:
    hub("hub-south")
    admin_page.goto("/admin/manager/hub/hub-south/change/")
    admin_page.locator("#gh-request-resync").click()

    expect(admin_page.locator("ul.messagelist")).to_contain_text("recorded")
    request = ResyncRequest.objects.get(subject="hub-south")
    assert request.completed_at is None
    row = admin_page.locator(f"#gh-resyncs tr[data-request='{request.pk}']")
    expect(row).to_be_visible()
    expect(row).not_to_contain_text("complete")

    answer_resync(request)  # the hub's agent answers: its full states go through the consumer's pipeline

    expect_text_after_reloads(admin_page, row, "complete", timeout=RESYNC_WATCH_SECONDS)
    request.refresh_from_db()
    assert request.completed_at is not None
    admin_page.goto("/admin/manager/resyncrequest/")
    listed = admin_page.locator("#result_list tbody tr", has_text="hub-south")
    expect(listed.locator(".gh-status")).to_have_text("complete")


def test_the_hub_page_shows_the_hubs_history_of_state_transitions(admin_page: Page) -> None:
    hub("hub-north")
    now = timezone.now()
    record_transition("hub-north", now - timedelta(minutes=30), "", "active", "first heartbeat")
    record_transition("hub-north", now - timedelta(minutes=20), "active", "inactive", "no heartbeat for 5 min")
    record_transition("hub-north", now - timedelta(minutes=10), "inactive", "active", "heartbeat again")

    admin_page.goto("/admin/manager/hub/hub-north/change/")
    transitions = admin_page.locator("#gh-transitions tbody tr")
    expect(transitions).to_have_count(3)
    expect(transitions.first).to_contain_text("heartbeat again")  # the newest first
    expect(transitions.nth(1)).to_contain_text("no heartbeat for 5 min")


def test_a_dead_letters_payload_is_visible_on_its_page(admin_page: Page) -> None:
    letter = DeadLetter.objects.create(
        topic="gh-status.hub-west",
        partition=0,
        offset=41,
        reason="not a CloudEvent: no ce_type header",
        reason_class="malformed",
        hub_name="hub-west",
        key=b"hub-west",
        value=b'{"clusters": ["payload-marker-7f3a"]}',
    )

    admin_page.goto("/admin/manager/deadletter/")
    admin_page.locator("#result_list tbody tr", has_text="hub-west").get_by_role("link").first.click()
    expect(admin_page).to_have_url(re.compile(rf"/admin/manager/deadletter/{letter.pk}/"))
    expect(admin_page.locator("#gh-dead-letter-value")).to_contain_text("payload-marker-7f3a")
    expect(admin_page.locator("#content")).to_contain_text("not a CloudEvent: no ce_type header")
