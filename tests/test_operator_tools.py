"""What operators use to ask for resyncs and see hubs: the JSON API, the admin action, the management command."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from globalhub.manager.models import Hub, HubTypeStatus, ResyncRequest
from globalhub.protocol.events import RESYNC_TYPES, EventType

pytestmark = pytest.mark.django_db


def hub(name: str | None = None, **fields: object) -> str:
    created = Hub.objects.create(name=name or f"hub-{uuid.uuid4().hex[:8]}", **fields)
    return created.name


def basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def operator() -> User:
    user = User.objects.create_user("operator", password="secret-pw")
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["add_resyncrequest", "view_resyncrequest", "view_hub"])
    )
    return user


def test_the_api_refuses_anonymous_callers_with_a_basic_challenge(client: Client) -> None:
    response = client.get("/api/hubs/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Basic")


def test_the_api_lists_hubs_with_state_and_heartbeat_age(client: Client, operator: User) -> None:
    name = hub(last_heartbeat=timezone.now() - timedelta(seconds=90), state="inactive")
    response = client.get("/api/hubs/", headers=basic("operator", "secret-pw"))
    assert response.status_code == 200
    (listed,) = [h for h in response.json()["hubs"] if h["name"] == name]
    assert listed["state"] == "inactive"
    assert 89 < listed["heartbeat_age_seconds"] < 120


def test_the_hub_view_shows_the_last_full_state_per_type_and_recent_requests(client: Client, operator: User) -> None:
    name = hub(last_heartbeat=timezone.now())
    HubTypeStatus.objects.create(
        hub_id=name,
        event_type=EventType.MANAGED_CLUSTER.value,
        last_full_state_at=timezone.now(),
        last_full_state_objects=42,
        version="3.7",
    )
    client.post(
        "/api/resync/",
        json.dumps({"hubs": [name], "types": ["managedcluster"]}),
        content_type="application/json",
        headers=basic("operator", "secret-pw"),
    )
    body = client.get(f"/api/hubs/{name}/", headers=basic("operator", "secret-pw")).json()
    assert body["types"]["managedcluster"]["last_full_state_objects"] == 42
    assert body["types"]["managedcluster"]["version"] == "3.7"
    assert [r["types"] for r in body["resync_requests"]] == [["managedcluster"]]
    assert client.get("/api/hubs/nope/", headers=basic("operator", "secret-pw")).status_code == 404


def test_an_authorised_user_asks_for_a_resync_and_can_follow_it(client: Client, operator: User) -> None:
    name = hub()
    response = client.post(
        "/api/resync/",
        json.dumps({"hubs": [name]}),
        content_type="application/json",
        headers=basic("operator", "secret-pw"),
    )
    assert response.status_code == 202
    (request,) = response.json()["requests"]
    assert request["types"] == [t.short for t in RESYNC_TYPES]
    assert request["reason"] == "operator" and request["requested_by"] == "api:operator"
    followed = client.get(f"/api/resync-requests/{request['id']}/", headers=basic("operator", "secret-pw")).json()
    assert followed["targets"] == {name: None}


def test_asking_for_all_hubs_is_one_broadcast(client: Client, operator: User) -> None:
    hub()
    hub()
    response = client.post(
        "/api/resync/",
        json.dumps({"hubs": "all", "types": ["policy.localspec"]}),
        content_type="application/json",
        headers=basic("operator", "secret-pw"),
    )
    (request,) = response.json()["requests"]
    assert request["subject"] == "broadcast"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "must be JSON"),
        ('{"hubs": []}', '"hubs" must be'),
        ('{"hubs": ["nope"]}', "unknown hub"),
        ('{"hubs": "all", "types": ["managedhub.heartbeat"]}', "cannot be resynced"),
        ('{"hubs": "all", "types": "managedcluster"}', '"types" must be a list'),
    ],
)
def test_a_bad_resync_request_is_refused_with_a_reason(client: Client, operator: User, body: str, message: str) -> None:
    response = client.post(
        "/api/resync/", body, content_type="application/json", headers=basic("operator", "secret-pw")
    )
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert not ResyncRequest.objects.exists()


def test_a_resync_of_several_hubs_with_one_unknown_is_refused_and_records_nothing(
    client: Client, operator: User
) -> None:
    known = hub()
    response = client.post(
        "/api/resync/",
        json.dumps({"hubs": [known, "nope"]}),
        content_type="application/json",
        headers=basic("operator", "secret-pw"),
    )
    assert response.status_code == 400
    assert "'nope'" in response.json()["error"]
    assert known not in response.json()["error"]
    assert not ResyncRequest.objects.exists()


def test_a_user_without_the_permission_cannot_ask_for_a_resync(client: Client) -> None:
    User.objects.create_user("viewer", password="secret-pw")
    response = client.post(
        "/api/resync/",
        json.dumps({"hubs": "all"}),
        content_type="application/json",
        headers=basic("viewer", "secret-pw"),
    )
    assert response.status_code == 403


def test_a_session_user_must_send_the_csrf_token_to_ask_for_a_resync(operator: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    name = hub()
    refused = client.post("/api/resync/", json.dumps({"hubs": [name]}), content_type="application/json")
    assert refused.status_code == 403
    client.get("/admin/login/")
    token = client.cookies["csrftoken"].value
    accepted = client.post(
        "/api/resync/", json.dumps({"hubs": [name]}), content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    assert accepted.status_code == 202


def test_the_admin_action_asks_the_selected_hubs_for_the_chosen_types(admin_client: Client) -> None:
    first, second = hub(), hub()
    hub()
    chosen = [EventType.MANAGED_CLUSTER.value, EventType.LOCAL_COMPLIANCE.value]
    page = admin_client.post("/admin/manager/hub/", {"action": "request_resync", "_selected_action": [first, second]})
    assert page.status_code == 200 and b"Request resync" in page.content
    done = admin_client.post(
        "/admin/manager/hub/",
        {"action": "request_resync", "_selected_action": [first, second], "apply": "1", "types": chosen},
    )
    assert done.status_code == 302
    requests = ResyncRequest.objects.order_by("id")
    assert [r.subject for r in requests] == [first, second] or [r.subject for r in requests] == [second, first]
    assert all(r.types == chosen and r.requested_by == "admin:admin" for r in requests)


def test_the_admin_action_shows_an_error_and_records_nothing_when_the_selected_hubs_are_gone(
    admin_client: Client,
) -> None:
    done = admin_client.post(
        "/admin/manager/hub/",
        {"action": "request_resync", "_selected_action": ["gone"], "apply": "1", "types": [RESYNC_TYPES[0].value]},
        follow=True,
    )
    assert done.status_code == 200
    assert b"No resync request recorded" in done.content
    assert not ResyncRequest.objects.exists()


def test_the_admin_shows_a_hubs_page_and_the_requests(admin_client: Client) -> None:
    name = hub(last_heartbeat=timezone.now())
    call_command("request_resync", "--hub", name)
    assert admin_client.get(f"/admin/manager/hub/{name}/change/").status_code == 200
    assert admin_client.get("/admin/manager/resyncrequest/").status_code == 200
    assert admin_client.get("/admin/manager/hub/?state=active").status_code == 200


def test_the_admin_and_the_api_show_a_skewed_clock_a_stalled_type_and_an_overdue_request(
    admin_client: Client, client: Client, operator: User
) -> None:
    name = hub(last_heartbeat=timezone.now(), clock_skew_seconds=-360.0, skewed_heartbeats=4)
    HubTypeStatus.objects.create(
        hub_id=name,
        event_type=EventType.MANAGED_CLUSTER.value,
        version="999.1",
        refused=5,
        last_refusal="version 24.3 at offset 9: 1 of its 1 objects are older than the row's",
        stalled_since=timezone.now(),
        stalls=1,
    )
    call_command("request_resync", "--hub", name)
    ResyncRequest.objects.filter(subject=name).update(requested_at=timezone.now() - timedelta(hours=1))

    listing = admin_client.get("/admin/manager/hub/").content.decode()
    assert "-360.0 s (over 30 s)" in listing and "managedcluster" in listing
    page = admin_client.get(f"/admin/manager/hub/{name}/change/").content.decode()
    assert "older than the row" in page
    assert "overdue" in admin_client.get("/admin/manager/resyncrequest/").content.decode()

    body = client.get(f"/api/hubs/{name}/", headers=basic("operator", "secret-pw")).json()
    assert body["clock_skew_seconds"] == -360.0 and body["skewed_heartbeats"] == 4
    assert body["types"]["managedcluster"]["stalls"] == 1 and body["types"]["managedcluster"]["stalled_since"]
    assert [r["progress"] for r in body["resync_requests"]] == ["overdue"]


def test_the_command_asks_named_hubs_or_all_of_them(capsys: pytest.CaptureFixture[str]) -> None:
    first, second = hub(), hub()
    call_command("request_resync", "--hub", first, "--hub", second, "--type", "managedcluster")
    call_command("request_resync", "--all")
    out = capsys.readouterr().out
    assert out.count("resync request #") == 3
    subjects = sorted(ResyncRequest.objects.values_list("subject", flat=True))
    assert subjects == sorted([first, second, "broadcast"])
    assert ResyncRequest.objects.get(subject=first).types == [EventType.MANAGED_CLUSTER.value]


def test_the_command_refuses_an_unknown_hub() -> None:
    with pytest.raises(CommandError, match="unknown hub"):
        call_command("request_resync", "--hub", "nope")


def test_the_command_with_one_unknown_hub_fails_and_records_nothing() -> None:
    known = hub()
    with pytest.raises(CommandError, match="'nope'") as refused:
        call_command("request_resync", "--hub", known, "--hub", "nope")
    assert refused.value.returncode != 0
    assert not ResyncRequest.objects.exists()
