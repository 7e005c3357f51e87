"""The operator's control room in the admin: the overview, the hub list and the hub page."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from unittest.mock import patch

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from globalhub.manager.admin.overview import gather_overview
from globalhub.manager.lifecycle import record_transition
from globalhub.manager.models import (
    Compliance,
    ConsumedPosition,
    DeadLetter,
    Hub,
    HubInfo,
    HubTransition,
    HubTypeStatus,
    LocalCompliance,
    LocalPolicy,
    ManagedCluster,
    ResyncRequest,
    TaskRun,
)
from globalhub.manager.resync_requests import create_request
from globalhub.protocol.events import RESYNC_TYPES, EventType

pytestmark = pytest.mark.django_db

TIMEOUT = settings.GLOBALHUB.hub_timeout
REFUSAL = "version 24.3 at offset 9: 1 of its 1 objects are older than the row's"


def hub(prefix: str = "hub", **fields: object) -> str:
    created = Hub.objects.create(name=f"{prefix}-{uuid.uuid4().hex[:8]}", **fields)
    return created.name


def fresh(prefix: str = "hub") -> str:
    return hub(prefix, last_heartbeat=timezone.now())


def silent_for(span: timedelta, prefix: str = "quiet") -> str:
    return hub(prefix, last_heartbeat=timezone.now() - span)


def stall(name: str, event_type: EventType = EventType.MANAGED_CLUSTER) -> None:
    HubTypeStatus.objects.create(
        hub_id=name,
        event_type=event_type.value,
        version="999.1",
        refused=5,
        last_refusal=REFUSAL,
        stalled_since=timezone.now(),
        stalls=1,
    )


def report(name: str, clusters: int = 1, policies: int = 1, non_compliant: int = 0) -> None:
    """Rows as if the hub had reported them."""
    now = timezone.now()
    ManagedCluster.objects.bulk_create(
        ManagedCluster(
            hub_id=name, cluster_id=uuid.uuid4(), cluster_name=f"c{i}", payload={}, created_at=now, updated_at=now
        )
        for i in range(clusters)
    )
    LocalPolicy.objects.bulk_create(
        LocalPolicy(
            hub_id=name, policy_id=uuid.uuid4(), policy_name=f"p{i}", payload={}, created_at=now, updated_at=now
        )
        for i in range(policies)
    )
    policy = uuid.uuid4()
    LocalCompliance.objects.bulk_create(
        LocalCompliance(
            hub_id=name, policy_id=policy, cluster_name=f"c{i}", compliance=Compliance.NON_COMPLIANT, updated_at=now
        )
        for i in range(non_compliant)
    )


def dead_letter(name: str, offset: int = 0, reason: str = "malformed: not JSON") -> DeadLetter:
    return DeadLetter.objects.create(
        topic=f"gh-status.{name}", partition=0, offset=offset, reason=reason, hub_name=name, value=b"{"
    )


def section(html: str, element_id: str) -> str:
    """The HTML of the element with this id, up to its table's end (or the paragraph's)."""
    start = html.index(f'id="{element_id}"')
    ends = [html.find(end, start) for end in ("</table>", "</p>")]
    return html[start : min(end for end in ends if end != -1)]


def hubs_in(html: str) -> list[str]:
    return re.findall(r'data-hub="([^"]+)"', html)


def staff(*codenames: str) -> User:
    user = User.objects.create_user(f"staff-{uuid.uuid4().hex[:6]}", password="secret-pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="manager", codename__in=codenames))
    return user


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- the overview ---------------------------------------------------------------------------------------------------


def test_the_overview_lists_an_overdue_hub_first_and_says_overdue_before_any_probe(admin_client: Client) -> None:
    fresh()
    letters = fresh(prefix="aaa")  # first by name, but dead letters are less urgent than silence
    dead_letter(letters)
    quiet = silent_for(TIMEOUT + timedelta(minutes=2), prefix="zzz")

    page = admin_client.get("/admin/")
    assert page.status_code == 200
    html = page.content.decode()
    attention = section(html, "gh-attention")
    assert hubs_in(attention) == [quiet, letters]
    assert 'class="gh-badge gh-badge-overdue">overdue<' in attention
    assert "heartbeat overdue: 7 min" in attention
    assert "1 dead letter(s) in the last hour" in attention
    assert Hub.objects.get(name=quiet).state == Hub.State.ACTIVE  # nothing judged it yet
    assert '<meta http-equiv="refresh" content="15">' in html


def test_the_overview_lists_a_stalled_type_with_its_reason(admin_client: Client) -> None:
    fresh()
    stalled = fresh()
    stall(stalled)
    attention = section(admin_client.get("/admin/").content.decode(), "gh-attention")
    assert hubs_in(attention) == [stalled]
    assert "stalled: managedcluster" in attention and "older than the row" in attention


def test_the_overview_lists_open_and_overdue_resync_requests() -> None:
    waiting, late = fresh(), fresh()
    now = timezone.now()
    create_request(waiting, None, ResyncRequest.Reason.OPERATOR, "test", now)
    create_request(late, None, ResyncRequest.Reason.OPERATOR, "test", now - timedelta(hours=2))
    overview = gather_overview(now, TIMEOUT, timedelta(minutes=10))
    reasons = {row.name: row.reasons for row in overview.attention}
    assert [row.name for row in overview.attention] == [late, waiting]  # overdue before merely open
    assert reasons[late] == ["resync overdue: 1 open request(s), oldest 2 h 0 min old"]
    assert reasons[waiting][0].startswith("resync open: 1 request(s) waiting")


def test_the_overview_counts_hubs_by_state_and_live_rows_only() -> None:
    live, gone = fresh(), hub(state=Hub.State.INACTIVE, last_heartbeat=timezone.now() - timedelta(hours=1))
    silent_for(TIMEOUT * 2)
    report(live, clusters=3, policies=2, non_compliant=2)
    report(gone, clusters=4, policies=1)
    ManagedCluster.objects.filter(hub_id=gone).update(deleted_at=timezone.now())
    LocalPolicy.objects.filter(hub_id=gone).update(deleted_at=timezone.now())
    # A cluster non-compliant with two policies counts once.
    LocalCompliance.objects.create(
        hub_id=live,
        policy_id=uuid.uuid4(),
        cluster_name="c0",
        compliance=Compliance.NON_COMPLIANT,
        updated_at=timezone.now(),
    )
    overview = gather_overview(timezone.now(), TIMEOUT, timedelta(minutes=10))
    assert overview.by_health == {"overdue": 1, "inactive": 1, "active": 1}
    assert (overview.clusters, overview.policies, overview.non_compliant_clusters) == (3, 2, 2)
    assert overview.rows_written == 3 + 2 + 3 + 4 + 1  # written in the last 5 minutes, deleted or not
    assert [row.name for row in overview.others] == [live, gone]


def test_the_overview_shows_the_ingest_lag_and_the_last_errors(admin_client: Client) -> None:
    name = fresh()
    ConsumedPosition.objects.create(
        topic=f"gh-status.{name}", partition=0, next_offset=10, end_offset=25, end_read_at=timezone.now()
    )
    dead_letter(name, reason="version: 0.0 is older than 3.1")
    TaskRun.objects.create(
        task_id="t1",
        task_name="manager.probe_hubs",
        status=TaskRun.Status.FAILED,
        started_at=timezone.now(),
        error="Traceback (most recent call last):\n  ...\nRuntimeError: Kafka is down",
    )
    html = admin_client.get("/admin/").content.decode()
    assert "<strong>15</strong> messages not ingested yet" in html
    last = section(html, "gh-last-error")
    assert "version: 0.0 is older than 3.1" in last
    assert "manager.probe_hubs" in last and "RuntimeError: Kafka is down" in last


def test_the_overview_shows_only_what_the_users_permissions_allow() -> None:
    """Hub names, dead letters and task errors are data like any other: the stock index shows a staff user only
    the models they may see, and so does the overview."""
    name = silent_for(timedelta(hours=1))
    dead_letter(name, reason="version: secret detail")
    assert Client().get("/admin/").status_code == 302  # anonymous visitors go to the login

    nothing = logged_in(staff()).get("/admin/")
    assert nothing.status_code == 200
    assert 'id="gh-overview"' not in nothing.content.decode() and name not in nothing.content.decode()

    hubs_only = logged_in(staff("view_hub")).get("/admin/").content.decode()
    assert name in section(hubs_only, "gh-attention")
    assert "secret detail" not in section(hubs_only, "gh-last-error")

    with_letters = logged_in(staff("view_hub", "view_deadletter")).get("/admin/").content.decode()
    assert "secret detail" in section(with_letters, "gh-last-error")


def test_the_attention_list_is_capped_and_says_how_many_more(admin_client: Client) -> None:
    from globalhub.manager.admin import overview

    names = [silent_for(timedelta(hours=1)) for _ in range(3)]
    with patch.object(overview, "ATTENTION_LIMIT", 2):
        html = admin_client.get("/admin/").content.decode()
    listed = [name for name in names if name in section(html, "gh-attention")]
    assert len(listed) == 2
    assert "1 more hubs need attention" in html


# --- the hub list ---------------------------------------------------------------------------------------------------


def test_the_hub_list_shows_overdue_before_the_probe_and_sorts_by_heartbeat_age(admin_client: Client) -> None:
    young = fresh()
    old = silent_for(TIMEOUT + timedelta(seconds=30))
    never = hub("never")
    Hub.objects.filter(name=never).update(created_at=timezone.now() - TIMEOUT * 2)

    html = admin_client.get("/admin/manager/hub/?o=3").content.decode()  # action checkbox, name, health, age
    rows = re.findall(r"<tr>.*?</tr>", html, flags=re.S)
    order = [name for row in rows for name in (young, old, never) if f">{name}<" in row]
    assert order == [young, old, never]
    assert html.count("gh-badge gh-badge-overdue") == 2 and html.count("gh-badge gh-badge-active") == 1
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", html)

    overdue_only = admin_client.get("/admin/manager/hub/?health=overdue").content.decode()
    assert old in overdue_only and never in overdue_only and young not in overdue_only


def test_the_hub_list_shows_counts_version_console_and_last_full_states(admin_client: Client) -> None:
    name = fresh()
    report(name, clusters=3, policies=2, non_compliant=1)
    dead_letter(name)
    HubInfo.objects.create(
        hub_id=name,
        cluster_id=uuid.uuid4(),
        payload={"mchVersion": "2.13.1", "consoleURL": "https://console.example"},
        console_url="https://console.example",
        created_at=timezone.now(),
        updated_at=timezone.now(),
    )
    HubTypeStatus.objects.create(
        hub_id=name,
        event_type=EventType.MANAGED_CLUSTER.value,
        last_full_state_at=datetime(2025, 1, 31, 12, 0, 5, tzinfo=UTC),
    )
    html = admin_client.get("/admin/manager/hub/").content.decode()
    for column, value in [("clusters", 3), ("policies", 2), ("non_compliant", 1), ("dead_letters", 1)]:
        assert f'<td class="field-{column}">{value}</td>' in html
    assert '<td class="field-version">2.13.1</td>' in html
    assert 'href="https://console.example"' in html
    assert "managedcluster</span> 2025-01-31 12:00:05 UTC" in html


def test_a_console_url_that_is_not_http_is_never_a_link(admin_client: Client) -> None:
    name = fresh()
    HubInfo.objects.create(
        hub_id=name,
        cluster_id=uuid.uuid4(),
        payload={},
        console_url="javascript:alert(1)",
        created_at=timezone.now(),
        updated_at=timezone.now(),
    )
    html = admin_client.get("/admin/manager/hub/").content.decode()
    assert 'href="javascript' not in html and "javascript:alert(1)" in html


def test_the_hub_list_query_count_does_not_grow_with_the_number_of_hubs(admin_client: Client) -> None:
    def queries_for_hubs(count: int) -> int:
        Hub.objects.all().delete()
        for _ in range(count):
            name = fresh()
            report(name, clusters=2, policies=1, non_compliant=1)
            stall(name)
            dead_letter(name, offset=DeadLetter.objects.count())
        with CaptureQueriesContext(connection) as queries:
            page = admin_client.get("/admin/manager/hub/")
        assert page.status_code == 200 and page.content.decode().count("gh-badge-active") == count
        return len(queries)

    assert queries_for_hubs(3) == queries_for_hubs(30)


@pytest.mark.parametrize("column", ["clusters", "policies", "non_compliant"])
def test_sorting_the_hub_list_by_a_count_lists_each_hub_once_in_the_counts_order(
    admin_client: Client, column: str
) -> None:
    # "clusters" and "policies" are also the hub's reverse relations: sorted by those, each hub was listed once per
    # cluster (or policy), in the order of their ids.
    from globalhub.manager.admin.hubs import HubAdmin

    counts = {fresh("few"): 1, fresh("many"): 3, fresh("some"): 2}
    for name, n in counts.items():
        report(name, clusters=n, policies=n, non_compliant=n)
    position = HubAdmin.list_display.index(column) + 1  # after the action checkbox
    for order, expected in [(f"-{position}", [3, 2, 1]), (str(position), [1, 2, 3])]:
        html = admin_client.get(f"/admin/manager/hub/?o={order}").content.decode()
        listed = re.findall(r'<th class="field-name"><a href="[^"]*">([^<]+)</a>', html)
        assert sorted(listed) == sorted(counts)
        assert [counts[name] for name in listed] == expected
        shown = [int(n) for n in re.findall(rf'<td class="field-{column}">(\d+)</td>', html)]
        assert shown == expected


# --- the hub page ---------------------------------------------------------------------------------------------------


def test_the_hub_page_shows_short_type_names_a_stall_with_its_reason_and_no_form_buttons(admin_client: Client) -> None:
    name = fresh()
    stall(name)
    HubTypeStatus.objects.create(
        hub_id=name, event_type=EventType.LOCAL_POLICY_SPEC.value, last_full_state_objects=42, version="3.7"
    )
    page = admin_client.get(f"/admin/manager/hub/{name}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    types = section(html, "gh-types")
    assert re.findall(r'data-type="([^"]+)"', types) == [t.short for t in RESYNC_TYPES]
    assert f">{EventType.MANAGED_CLUSTER.value}<" not in types  # the long name only as a tooltip
    stalled_row = re.search(r'<tr class="gh-type-row gh-stalled-row" data-type="managedcluster">.*?</tr>', types, re.S)
    assert stalled_row and "older than the row" in stalled_row.group(0)
    assert '<span class="gh-ok">no</span>' in types and ">42<" in types and ">3.7<" in types
    assert 'name="_save"' not in html and 'value="Save"' not in html
    assert "deletelink" not in html and 'name="_delete"' not in html


def test_the_hub_page_shows_the_transition_history_newest_first(admin_client: Client) -> None:
    name = fresh()
    now = timezone.now()
    record_transition(name, now - timedelta(hours=2), "", "active", "first seen", "consumer")
    record_transition(name, now - timedelta(hours=1), "active", "inactive", "no heartbeat read for 5 min", "probe")
    record_transition(name, now, "inactive", "active", "heartbeat read again: resync request #7", "heartbeat")
    record_transition("another-hub", now, "", "active", "first seen", "consumer")
    transitions = section(admin_client.get(f"/admin/manager/hub/{name}/change/").content.decode(), "gh-transitions")
    reasons = re.findall(r"<td>(first seen|no heartbeat read for 5 min|heartbeat read again: [^<]+)</td>", transitions)
    assert reasons == ["heartbeat read again: resync request #7", "no heartbeat read for 5 min", "first seen"]
    assert transitions.count('class="gh-transition"') == 3


def test_the_hub_page_links_to_the_hubs_own_rows(admin_client: Client) -> None:
    name, other = fresh(), fresh()
    report(name, clusters=2)
    report(other, clusters=1)
    dead_letter(other)
    links = section(admin_client.get(f"/admin/manager/hub/{name}/change/").content.decode(), "gh-links")
    urls = [url.replace("&amp;", "&") for url in re.findall(r'href="([^"]+)"', links)]
    assert len(urls) == 6
    for url in urls:
        response = admin_client.get(url)
        assert response.status_code == 200, url  # a refused filter would redirect to ?e=1
    clusters = admin_client.get(urls[0]).content.decode()
    assert re.findall(r'<td class="field-hub[^"]*">([^<]+)</td>', clusters) == [name, name]
    dead_letters = admin_client.get(urls[3]).content.decode()
    assert "0 dead letters" in links and "malformed: not JSON" not in dead_letters


def test_the_request_resync_button_records_a_request_for_the_hub(admin_client: Client) -> None:
    name = fresh()
    html = admin_client.get(f"/admin/manager/hub/{name}/change/").content.decode()
    assert 'id="gh-request-resync"' in html
    done = admin_client.post(
        f"/admin/manager/hub/{name}/resync/",
        {"types": [EventType.MANAGED_CLUSTER.value, EventType.LOCAL_COMPLIANCE.value]},
        follow=True,
    )
    (request,) = ResyncRequest.objects.all()
    assert (request.subject, request.reason, request.requested_by) == (name, "operator", "admin:admin")
    assert request.types == [EventType.MANAGED_CLUSTER.value, EventType.LOCAL_COMPLIANCE.value]
    assert f"Resync request #{request.pk} recorded" in done.content.decode()
    assert f'data-request="{request.pk}"' in section(done.content.decode(), "gh-resyncs")


def test_the_request_resync_button_is_refused_without_the_permission() -> None:
    name = fresh()
    client = logged_in(staff("view_hub"))
    html = client.get(f"/admin/manager/hub/{name}/change/").content.decode()
    assert 'id="gh-request-resync"' not in html and 'id="gh-types"' in html
    refused = client.post(f"/admin/manager/hub/{name}/resync/", {"types": [RESYNC_TYPES[0].value]})
    assert refused.status_code == 403
    assert not ResyncRequest.objects.exists()


def test_the_request_resync_button_needs_the_csrf_token() -> None:
    name = fresh()
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff("view_hub", "add_resyncrequest"))
    refused = client.post(f"/admin/manager/hub/{name}/resync/", {"types": [RESYNC_TYPES[0].value]})
    assert refused.status_code == 403
    page = client.get(f"/admin/manager/hub/{name}/change/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert token
    accepted = client.post(
        f"/admin/manager/hub/{name}/resync/",
        {"types": [RESYNC_TYPES[0].value], "csrfmiddlewaretoken": token.group(1)},
    )
    assert accepted.status_code == 302 and ResyncRequest.objects.filter(subject=name).count() == 1


# --- deleting a hub -------------------------------------------------------------------------------------------------


def test_the_delete_action_says_what_it_does_then_deletes_the_hub_and_records_it(admin_client: Client) -> None:
    name, kept = fresh(), fresh()
    report(name, clusters=2)
    dead_letter(name)
    confirm = admin_client.post("/admin/manager/hub/", {"action": "delete_hubs", "_selected_action": [name]})
    html = confirm.content.decode()
    assert confirm.status_code == 200 and 'id="gh-confirm-delete"' in html
    assert "history of state transitions" in html and "resyncs it whole" in html
    assert Hub.objects.filter(name=name).exists()  # nothing happened yet

    done = admin_client.post(
        "/admin/manager/hub/", {"action": "delete_hubs", "_selected_action": [name], "confirm": "yes"}, follow=True
    )
    assert f"Hub {name} deleted" in done.content.decode()
    assert not Hub.objects.filter(name=name).exists() and Hub.objects.filter(name=kept).exists()
    assert not ManagedCluster.objects.filter(hub_id=name).exists()
    assert DeadLetter.objects.filter(hub_name=name).exists()  # they stay
    (transition,) = HubTransition.objects.filter(hub_name=name)
    assert (transition.from_state, transition.to_state, transition.by) == ("active", "deleted", "admin:admin")
    assert "delete_selected" not in admin_client.get("/admin/manager/hub/").content.decode()


def test_the_delete_page_of_one_hub_confirms_then_deletes_through_the_lifecycle(admin_client: Client) -> None:
    name = fresh()
    assert 'id="gh-confirm-delete"' in admin_client.get(f"/admin/manager/hub/{name}/delete/").content.decode()
    done = admin_client.post(f"/admin/manager/hub/{name}/delete/", {"confirm": "yes"})
    assert done.status_code == 302
    assert not Hub.objects.filter(name=name).exists()
    assert HubTransition.objects.get(hub_name=name).to_state == "deleted"


def test_deleting_a_hub_is_refused_without_the_permission() -> None:
    name = fresh()
    client = logged_in(staff("view_hub", "add_resyncrequest"))
    assert "delete_hubs" not in client.get("/admin/manager/hub/").content.decode()
    client.post("/admin/manager/hub/", {"action": "delete_hubs", "_selected_action": [name], "confirm": "yes"})
    assert client.post(f"/admin/manager/hub/{name}/delete/", {"confirm": "yes"}).status_code == 403
    assert Hub.objects.filter(name=name).exists() and not HubTransition.objects.exists()


# --- the history ----------------------------------------------------------------------------------------------------


def test_the_transitions_list_is_read_only_filterable_and_searchable(admin_client: Client) -> None:
    now = timezone.now()
    record_transition("hub-a", now, "active", "inactive", "no heartbeat", "probe")
    record_transition("hub-b", now, "active", "deleted", "deleted by an operator", "admin:admin")
    assert "hub-a" not in admin_client.get("/admin/manager/hubtransition/?to_state=deleted").content.decode()
    found = admin_client.get("/admin/manager/hubtransition/?q=hub-a").content.decode()
    assert "hub-a" in found and "no heartbeat" in found
    transition = HubTransition.objects.get(hub_name="hub-a")
    page = admin_client.get(f"/admin/manager/hubtransition/{transition.pk}/change/").content.decode()
    assert 'name="_save"' not in page and "deletelink" not in page
    assert admin_client.get("/admin/manager/hubtransition/add/").status_code == 403
