"""The admin in a real browser, as an operator uses it: logging in, a hub's page, read-only bookkeeping, and a resync
asked for from the hub list."""

from __future__ import annotations

import re
import uuid

import pytest
from django.db.models import Model
from django.utils import timezone
from playwright.sync_api import Page, expect

from globalhub.manager.models import (
    ConsumedPosition,
    DeadLetter,
    Hub,
    ManagedCluster,
    ResyncProgress,
    ResyncRequest,
    TypeVersion,
)
from globalhub.protocol.events import RESYNC_TYPES, EventType
from tests.browser.helpers import log_in

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_operator_logs_in_through_the_form_and_sees_the_admin_index(admin_page: Page) -> None:
    expect(admin_page).to_have_url(re.compile(r"/admin/$"))
    expect(admin_page.locator("#site-name")).to_have_text("globalhub manager")
    expect(admin_page.get_by_role("link", name="Hubs", exact=True).first).to_be_visible()


def test_a_wrong_password_is_refused_by_the_login_form(page: Page, operator: tuple[str, str]) -> None:
    name, _ = operator
    page.goto("/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login/"))
    page.fill("#id_username", name)
    page.fill("#id_password", "not-the-password")
    page.click("input[type=submit]")
    expect(page.locator(".errornote")).to_contain_text("correct username and password")
    expect(page).to_have_url(re.compile(r"/admin/login/"))


def test_a_hubs_page_opens_from_the_hub_list(admin_page: Page) -> None:
    Hub.objects.create(name="hub-east", state=Hub.State.ACTIVE, last_heartbeat=timezone.now())
    admin_page.goto("/admin/manager/hub/")
    admin_page.locator("#result_list").get_by_role("link", name="hub-east", exact=True).click()
    expect(admin_page).to_have_url(re.compile(r"/admin/manager/hub/hub-east/"))
    expect(admin_page.locator("#content")).to_contain_text("hub-east")


# The consumer's bookkeeping, and a data table: what the hubs reported is theirs too.
BOOKKEEPING = ["consumedposition", "typeversion", "resyncprogress", "deadletter", "managedcluster"]


def bookkeeping_row(model: str, hub: Hub) -> Model:
    """One row of ``model`` (an admin URL name), of ``hub``."""
    now = timezone.now()
    if model == "consumedposition":
        return ConsumedPosition.objects.create(topic=f"gh-status.{hub.name}", partition=0, next_offset=7)
    if model == "typeversion":
        return TypeVersion.objects.create(hub=hub, event_type=EventType.MANAGED_CLUSTER.value, generation=1, value=2)
    if model == "resyncprogress":
        return ResyncProgress.objects.create(
            hub=hub, event_type=EventType.MANAGED_CLUSTER.value, resync_id="r1", started_at=now
        )
    if model == "deadletter":
        return DeadLetter.objects.create(
            topic=f"gh-status.{hub.name}", partition=0, offset=3, reason="not JSON", hub_name=hub.name, value=b"{"
        )
    assert model == "managedcluster", model
    return ManagedCluster.objects.create(
        hub=hub,
        cluster_id=uuid.uuid4(),
        cluster_name="c1",
        payload={"metadata": {"name": "c1"}},
        created_at=now,
        updated_at=now,
    )


@pytest.mark.parametrize("model", BOOKKEEPING)
def test_bookkeeping_has_no_delete_in_its_list_nor_on_its_rows_page(admin_page: Page, model: str) -> None:
    """Positions, versions, resync progress, dead letters and the data are the consumer's: deleting a row by hand
    would make it read a hub's topic again, forget why a message was refused, or lose what a hub reported."""
    row = bookkeeping_row(model, Hub.objects.create(name="hub-books", last_heartbeat=timezone.now()))

    admin_page.goto(f"/admin/manager/{model}/")
    expect(admin_page.locator("#result_list")).to_be_visible()
    expect(admin_page.locator("select[name=action] option[value=delete_selected]")).to_have_count(0)
    admin_page.goto(f"/admin/manager/{model}/{row.pk}/change/")
    expect(admin_page.locator("#content")).to_be_visible()
    expect(admin_page.locator("a.deletelink")).to_have_count(0)
    expect(admin_page.get_by_role("button", name=re.compile("^Save"))).to_have_count(0)
    admin_page.goto(f"/admin/manager/{model}/{row.pk}/delete/")
    expect(admin_page.locator("input[type=submit][value*='sure' i]")).to_have_count(0)


def test_a_resync_requested_from_the_hub_lists_action_is_recorded_and_listed(admin_page: Page) -> None:
    Hub.objects.create(name="hub-west", state=Hub.State.ACTIVE, last_heartbeat=timezone.now())
    Hub.objects.create(name="hub-other", state=Hub.State.ACTIVE, last_heartbeat=timezone.now())
    admin_page.goto("/admin/manager/hub/")
    admin_page.locator("input[name=_selected_action][value=hub-west]").check()
    admin_page.select_option("select[name=action]", "request_resync")
    admin_page.locator("button[name=index], input[name=index]").first.click()

    expect(admin_page.locator("#content")).to_contain_text("hub-west")
    admin_page.get_by_role("button", name="Request resync").click()

    expect(admin_page.locator("ul.messagelist")).to_contain_text("1 resync request(s) recorded")
    (request,) = ResyncRequest.objects.filter(subject="hub-west")
    assert sorted(request.types) == sorted(t.value for t in RESYNC_TYPES)
    assert request.requested_by == "admin:operator"
    assert not ResyncRequest.objects.filter(subject="hub-other").exists()

    admin_page.goto("/admin/manager/resyncrequest/")
    expect(admin_page.locator("#result_list tbody tr", has_text="hub-west")).to_have_count(1)


def test_a_logged_out_operator_is_sent_back_to_the_login_form(page: Page, operator: tuple[str, str]) -> None:
    log_in(page, *operator)
    page.goto("/admin/manager/hub/")
    expect(page.locator("#result_list, p.paginator").first).to_be_visible()
    page.context.clear_cookies()
    page.goto("/admin/manager/hub/")
    expect(page).to_have_url(re.compile(r"/admin/login/\?next=/admin/manager/hub/"))
