"""Where a resync request stands (pending, sent, complete, overdue, failed), and what operators do with it."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from globalhub.manager.models import Hub, ResyncRequest, ResyncTarget
from globalhub.manager.resync_requests import Status, count_by_status, create_request, request_resyncs, status_of
from globalhub.protocol.events import BROADCAST, EventType

pytestmark = pytest.mark.django_db

OPERATOR = ResyncRequest.Reason.OPERATOR
LONG_AGO = timedelta(hours=1)  # past GH_RESYNC_OVERDUE (10 min by default)


def hub(state: str = Hub.State.ACTIVE) -> str:
    return Hub.objects.create(name=f"hub-{uuid.uuid4().hex[:8]}", state=state).name


def status(request: ResyncRequest) -> Status:
    request.refresh_from_db()
    return status_of(request, timezone.now(), settings.GLOBALHUB.resync_overdue)


def test_a_request_not_sent_yet_is_pending() -> None:
    request = create_request(hub(), None, OPERATOR, "test")
    assert status(request) is Status.PENDING


def test_a_request_sent_and_awaiting_its_answers_is_sent() -> None:
    request = create_request(hub(), None, OPERATOR, "test")
    ResyncRequest.objects.filter(pk=request.pk).update(sent_at=timezone.now(), send_attempts=1)
    assert status(request) is Status.SENT


def test_a_request_every_target_answered_is_complete() -> None:
    request = create_request(hub(), None, OPERATOR, "test")
    ResyncRequest.objects.filter(pk=request.pk).update(sent_at=timezone.now(), completed_at=timezone.now())
    assert status(request) is Status.COMPLETE


def test_a_request_of_a_live_hub_still_open_past_the_setting_is_overdue() -> None:
    request = create_request(hub(), None, OPERATOR, "test", now=timezone.now() - LONG_AGO)
    ResyncRequest.objects.filter(pk=request.pk).update(sent_at=timezone.now() - LONG_AGO)
    assert status(request) is Status.OVERDUE


def test_a_request_whose_hubs_went_inactive_has_failed_until_one_is_back() -> None:
    name = hub()
    request = create_request(name, None, OPERATOR, "test")
    ResyncRequest.objects.filter(pk=request.pk).update(sent_at=timezone.now())
    Hub.objects.filter(name=name).update(state=Hub.State.INACTIVE)
    assert status(request) is Status.FAILED
    Hub.objects.filter(name=name).update(state=Hub.State.ACTIVE)
    assert status(request) is Status.SENT


def test_a_broadcast_fails_only_when_no_hub_that_owes_an_answer_is_active() -> None:
    first, second = hub(), hub()
    (request,) = request_resyncs(None, None, OPERATOR, "test")
    ResyncTarget.objects.filter(request=request, hub_id=first).update(completed_at=timezone.now())
    Hub.objects.filter(name=first).update(state=Hub.State.INACTIVE)  # it answered: it owes nothing
    assert status(request) is Status.PENDING
    Hub.objects.filter(name=second).update(state=Hub.State.INACTIVE)
    assert status(request) is Status.FAILED


def test_a_request_whose_hub_was_deleted_has_failed() -> None:
    name = hub()
    request = create_request(name, None, OPERATOR, "test")
    Hub.objects.filter(name=name).delete()  # its targets go with it
    assert status(request) is Status.FAILED


def test_a_request_whose_sends_kept_failing_past_the_setting_has_failed() -> None:
    request = create_request(hub(), None, OPERATOR, "test", now=timezone.now() - LONG_AGO)
    ResyncRequest.objects.filter(pk=request.pk).update(send_attempts=40, last_send_error="broker down")
    assert status(request) is Status.FAILED


def test_a_request_whose_send_failed_recently_is_still_pending() -> None:
    request = create_request(hub(), None, OPERATOR, "test")
    ResyncRequest.objects.filter(pk=request.pk).update(send_attempts=1, last_send_error="broker down")
    assert status(request) is Status.PENDING


@pytest.mark.parametrize("ask", ["create_request", "request_resyncs"])
def test_a_broadcast_while_no_hub_is_active_completes_at_once(ask: str) -> None:
    hub(Hub.State.INACTIVE)
    if ask == "create_request":
        request = create_request(None, None, OPERATOR, "test")
    else:
        (request,) = request_resyncs(None, None, OPERATOR, "test")
    assert request.subject == BROADCAST
    assert not request.targets.exists()
    assert request.completed_at == request.requested_at
    assert status(request) is Status.COMPLETE


def test_the_counts_by_status_agree_with_each_request_s_status() -> None:
    complete = create_request(None, None, OPERATOR, "test")  # no hub is active yet: nobody to ask
    pending = create_request(hub(), None, OPERATOR, "test")
    failed = create_request(hub(Hub.State.INACTIVE), None, OPERATOR, "test")
    counts = count_by_status(timezone.now(), settings.GLOBALHUB.resync_overdue)
    assert [status(r) for r in (complete, pending, failed)] == [Status.COMPLETE, Status.PENDING, Status.FAILED]
    assert counts == {
        Status.COMPLETE: 1,
        Status.PENDING: 1,
        Status.FAILED: 1,
        Status.SENT: 0,
        Status.OVERDUE: 0,
    }


def test_the_model_s_progress_is_the_same_status() -> None:
    request = create_request(hub(), None, OPERATOR, "test", now=timezone.now() - LONG_AGO)
    assert request.progress(timezone.now(), settings.GLOBALHUB.resync_overdue) == "overdue"


def test_the_admin_list_shows_each_status_and_filters_the_ones_not_completed(admin_client: Client) -> None:
    live, gone = hub(), hub(Hub.State.INACTIVE)
    pending = create_request(live, None, OPERATOR, "test")
    sent = create_request(live, [EventType.MANAGED_CLUSTER], OPERATOR, "test")
    ResyncRequest.objects.filter(pk=sent.pk).update(sent_at=timezone.now())
    failed = create_request(gone, None, OPERATOR, "test")
    overdue = create_request(live, None, OPERATOR, "test", now=timezone.now() - LONG_AGO)
    done = create_request(live, None, OPERATOR, "test", now=timezone.now() - LONG_AGO)
    ResyncRequest.objects.filter(pk=done.pk).update(completed_at=timezone.now() - LONG_AGO + timedelta(seconds=75))

    page = admin_client.get("/admin/manager/resyncrequest/").content.decode()
    for shown in ("pending", "sent", "failed", "overdue", "complete"):
        assert f'class="gh-status gh-status-{shown}"' in page, shown
    assert "1 min 15 s" in page  # the complete one's duration
    assert "so far" in page  # the others'

    not_completed = admin_client.get("/admin/manager/resyncrequest/?status=not_completed").context["cl"]
    assert {r.pk for r in not_completed.result_list} == {pending.pk, sent.pk, failed.pk, overdue.pk}
    only_failed = admin_client.get("/admin/manager/resyncrequest/?status=failed").context["cl"]
    assert [r.pk for r in only_failed.result_list] == [failed.pk]


def test_the_request_page_shows_the_outcome_per_hub_and_type_and_has_no_save_or_delete(admin_client: Client) -> None:
    first, second = hub(), hub()
    (request,) = request_resyncs(None, [EventType.MANAGED_CLUSTER, EventType.LOCAL_POLICY_SPEC], OPERATOR, "test")
    ResyncTarget.objects.filter(request=request, hub_id=first).update(
        answered_types=[EventType.MANAGED_CLUSTER.value, EventType.LOCAL_POLICY_SPEC.value], completed_at=timezone.now()
    )
    ResyncTarget.objects.filter(request=request, hub_id=second).update(
        answered_types=[EventType.LOCAL_POLICY_SPEC.value]
    )

    response = admin_client.get(f"/admin/manager/resyncrequest/{request.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    outcome = page[page.index('id="gh-resync-outcome"') :]
    outcome = outcome[: outcome.index("</table>")]
    first_row = outcome[outcome.index(f"<td>{first}</td>") :].split("</tr>")[0]
    second_row = outcome[outcome.index(f"<td>{second}</td>") :].split("</tr>")[0]
    assert first_row.count("answered") == 2 and "owed" not in first_row
    assert second_row.count("owed") == 1 and second_row.count("answered") == 1
    assert "1 of 2 hubs" in page
    assert 'name="_save"' not in page and "/delete/" not in page


def test_re_request_asks_the_same_subject_and_types_again_as_the_operator(admin_client: Client) -> None:
    name = hub()
    hub()
    original = create_request(name, [EventType.LOCAL_COMPLIANCE], ResyncRequest.Reason.STALLED, "stall detector")
    broadcast = create_request(None, [EventType.MANAGED_CLUSTER], ResyncRequest.Reason.STARTUP, "manager start")

    response = admin_client.post(
        "/admin/manager/resyncrequest/",
        {"action": "re_request", "_selected_action": [original.pk, broadcast.pk]},
        follow=True,
    )
    assert response.status_code == 200
    again = ResyncRequest.objects.filter(reason=OPERATOR).order_by("id")
    assert [(r.subject, r.types, r.requested_by) for r in again] == [
        (name, [EventType.LOCAL_COMPLIANCE.value], "admin:admin"),
        (BROADCAST, [EventType.MANAGED_CLUSTER.value], "admin:admin"),
    ]
    assert again[1].targets.count() == 2  # the hubs active now
    assert "2 resync request(s) recorded" in response.content.decode()


def test_re_request_of_a_deleted_hub_records_nothing_and_says_why(admin_client: Client) -> None:
    name = hub()
    original = create_request(name, None, OPERATOR, "test")
    Hub.objects.filter(name=name).delete()
    response = admin_client.post(
        "/admin/manager/resyncrequest/", {"action": "re_request", "_selected_action": [original.pk]}, follow=True
    )
    assert "No resync request recorded: unknown hub" in response.content.decode()
    assert ResyncRequest.objects.count() == 1


def test_re_request_needs_the_permission_to_ask_for_resyncs(client: Client) -> None:
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_resyncrequest"))
    client.force_login(viewer)
    original = create_request(hub(), None, OPERATOR, "test")

    page = client.get("/admin/manager/resyncrequest/")
    assert page.status_code == 200 and "re_request" not in page.content.decode()
    client.post("/admin/manager/resyncrequest/", {"action": "re_request", "_selected_action": [original.pk]})
    assert ResyncRequest.objects.count() == 1

    viewer.user_permissions.add(Permission.objects.get(codename="add_resyncrequest"))
    client.post("/admin/manager/resyncrequest/", {"action": "re_request", "_selected_action": [original.pk]})
    assert ResyncRequest.objects.count() == 2
