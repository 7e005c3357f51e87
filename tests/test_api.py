"""The JSON API: view permissions on reads, token authentication, the list endpoints' filters and pages, and JSON
answers for unknown paths and wrong methods. (Resync requests through the API: ``test_operator_tools.py``.)"""

from __future__ import annotations

import base64
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from globalhub.manager.api.pages import MAX_LIMIT
from globalhub.manager.api.tokens import hash_token, issue_token
from globalhub.manager.models import (
    ApiToken,
    Hub,
    LocalCompliance,
    LocalPolicy,
    ManagedCluster,
    ResyncRequest,
)

pytestmark = pytest.mark.django_db

READ_PERMISSIONS = ["view_hub", "view_managedcluster", "view_localpolicy", "view_localcompliance", "view_resyncrequest"]


def user_with(*codenames: str, username: str | None = None, password: str | None = None) -> User:
    user = User.objects.create_user(username or f"u-{uuid.uuid4().hex[:8]}", password=password)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def bearer(user: User, expires_in: timedelta | None = None) -> dict[str, str]:
    _, token = issue_token(user, "test", timezone.now(), expires_in)
    return {"Authorization": f"Bearer {token}"}


def reader() -> dict[str, str]:
    """A token of a user who may read everything."""
    return bearer(user_with(*READ_PERMISSIONS))


def hub(name: str | None = None, **fields: Any) -> str:
    return Hub.objects.create(name=name or f"hub-{uuid.uuid4().hex[:8]}", **fields).name


def cluster(hub_name: str, name: str, labels: dict[str, str] | None = None, deleted: bool = False) -> ManagedCluster:
    now = timezone.now()
    cluster_id = uuid.uuid4()
    payload = {"metadata": {"name": name, "labels": labels or {}}, "status": {"conditions": []}}
    return ManagedCluster.objects.create(
        hub_id=hub_name,
        cluster_id=cluster_id,
        cluster_name=name,
        payload=payload,
        created_at=now,
        updated_at=now,
        deleted_at=now if deleted else None,
    )


def policy(hub_name: str, name: str, deleted: bool = False) -> LocalPolicy:
    now = timezone.now()
    return LocalPolicy.objects.create(
        hub_id=hub_name,
        policy_id=uuid.uuid4(),
        policy_name=name,
        payload={"metadata": {"name": name}},
        created_at=now,
        updated_at=now,
        deleted_at=now if deleted else None,
    )


def compliance(hub_name: str, policy_id: uuid.UUID, cluster_name: str, state: str) -> LocalCompliance:
    return LocalCompliance.objects.create(
        hub_id=hub_name, policy_id=policy_id, cluster_name=cluster_name, compliance=state, updated_at=timezone.now()
    )


def names(body: dict[str, Any], key: str, field: str = "name") -> list[str]:
    return [row[field] for row in body[key]]


ENDPOINTS = [
    ("/api/hubs/", "view_hub"),
    ("/api/hubs/{hub}/", "view_hub"),
    ("/api/clusters/", "view_managedcluster"),
    ("/api/policies/", "view_localpolicy"),
    ("/api/compliance/", "view_localcompliance"),
    ("/api/resync-requests/{request}/", "view_resyncrequest"),
]


@pytest.mark.parametrize(("template", "codename"), ENDPOINTS)
def test_each_read_needs_its_view_permission(client: Client, template: str, codename: str) -> None:
    name = hub()
    request = ResyncRequest.objects.create(
        subject=name, types=[], reason=ResyncRequest.Reason.OPERATOR, requested_by="t", requested_at=timezone.now()
    )
    url = template.format(hub=name, request=request.pk)
    others = [c for c in READ_PERMISSIONS if c != codename]

    refused = client.get(url, headers=bearer(user_with(*others)))
    assert refused.status_code == 403
    assert refused["Content-Type"] == "application/json"
    assert f"manager.{codename}" in refused.json()["error"]

    assert client.get(url, headers=bearer(user_with(codename))).status_code == 200


def test_a_hub_shows_its_resync_requests_only_to_who_may_read_them(client: Client) -> None:
    name = hub()
    call_command("request_resync", "--hub", name, stdout=io.StringIO())
    hubs_only = client.get(f"/api/hubs/{name}/", headers=bearer(user_with("view_hub"))).json()
    assert "resync_requests" not in hubs_only
    both = client.get(f"/api/hubs/{name}/", headers=bearer(user_with("view_hub", "view_resyncrequest"))).json()
    assert [r["subject"] for r in both["resync_requests"]] == [name]


def test_a_valid_token_authenticates_and_records_its_use(client: Client) -> None:
    user = user_with("view_hub")
    record, token = issue_token(user, "ci", timezone.now())
    assert record.key_hash == hash_token(token) and token.startswith(record.key_prefix)
    assert record.last_used_at is None

    response = client.get("/api/hubs/", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    record.refresh_from_db()
    assert record.last_used_at is not None


def test_last_used_is_written_at_most_once_a_minute(client: Client) -> None:
    user = user_with("view_hub")
    start = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False) as traveller:
        record, token = issue_token(user, "ci", timezone.now())
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/hubs/", headers=headers).status_code == 200
        record.refresh_from_db()
        assert record.last_used_at == start

        traveller.shift(timedelta(seconds=59))
        assert client.get("/api/hubs/", headers=headers).status_code == 200
        record.refresh_from_db()
        assert record.last_used_at == start

        traveller.shift(timedelta(seconds=2))
        assert client.get("/api/hubs/", headers=headers).status_code == 200
        record.refresh_from_db()
        assert record.last_used_at == start + timedelta(seconds=61)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Bearer not-a-token", "invalid token"),
        ("Bearer ", "invalid token"),
        ("Bearer " + "x" * 5000, "invalid token"),
        ("Token abc", "unsupported authorization scheme"),
        ("Basic !!!", "wrong username or password"),
    ],
)
def test_a_wrong_credential_is_a_json_401(client: Client, header: str, message: str) -> None:
    user_with("view_hub")
    response = client.get("/api/hubs/", headers={"Authorization": header})
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert message in response.json()["error"]
    assert response["WWW-Authenticate"]


def test_an_expired_token_is_refused(client: Client) -> None:
    user = user_with("view_hub")
    record, token = issue_token(user, "ci", timezone.now(), timedelta(hours=1))
    ApiToken.objects.filter(pk=record.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = client.get("/api/hubs/", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json() == {"error": "token expired"}
    assert response["WWW-Authenticate"].startswith("Bearer")
    record.refresh_from_db()
    assert record.last_used_at is None


def test_the_token_of_an_inactive_user_is_refused(client: Client) -> None:
    user = user_with("view_hub")
    headers = bearer(user)
    User.objects.filter(pk=user.pk).update(is_active=False)
    response = client.get("/api/hubs/", headers=headers)
    assert response.status_code == 401
    assert "inactive" in response.json()["error"]


def test_a_token_request_needs_no_csrf_token_to_ask_for_a_resync() -> None:
    client = Client(enforce_csrf_checks=True)
    name = hub()
    headers = bearer(user_with("add_resyncrequest"))
    response = client.post(
        "/api/resync/", json.dumps({"hubs": [name]}), content_type="application/json", headers=headers
    )
    assert response.status_code == 202
    assert ResyncRequest.objects.get().requested_by.startswith("api:u-")


def test_a_token_without_the_add_permission_cannot_ask_for_a_resync(client: Client) -> None:
    name = hub()
    response = client.post(
        "/api/resync/", json.dumps({"hubs": [name]}), content_type="application/json", headers=reader()
    )
    assert response.status_code == 403
    assert "manager.add_resyncrequest" in response.json()["error"]
    assert not ResyncRequest.objects.exists()


def test_basic_authentication_still_works(client: Client) -> None:
    user_with("view_hub", username="scripter", password="secret-pw")
    credentials = base64.b64encode(b"scripter:secret-pw").decode()
    assert client.get("/api/hubs/", headers={"Authorization": f"Basic {credentials}"}).status_code == 200
    wrong = base64.b64encode(b"scripter:wrong").decode()
    assert client.get("/api/hubs/", headers={"Authorization": f"Basic {wrong}"}).status_code == 401


def test_the_admin_session_still_works_and_a_failing_header_overrides_it(client: Client) -> None:
    client.force_login(user_with("view_hub"))
    assert client.get("/api/hubs/").status_code == 200
    assert client.get("/api/hubs/", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_an_anonymous_caller_gets_a_json_401(client: Client) -> None:
    response = client.get("/api/clusters/")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response["WWW-Authenticate"].startswith("Basic")


def test_a_list_is_paged_in_a_stable_order_with_the_total_and_next_links(client: Client) -> None:
    name = hub()
    created = [cluster(name, f"c{i}").pk for i in range(7)]
    headers = reader()

    first = client.get(f"/api/clusters/?hub={name}&limit=3", headers=headers).json()
    assert [row["id"] for row in first["clusters"]] == created[:3]
    assert first["count"] == 7
    assert first["next"].startswith("http://testserver/api/clusters/?")
    assert f"hub={name}" in first["next"] and "limit=3" in first["next"]

    added = cluster(name, "late").pk  # a row added while paging comes after the rows already read
    second = client.get(first["next"], headers=headers).json()
    assert [row["id"] for row in second["clusters"]] == created[3:6]
    assert second["count"] is None
    third = client.get(second["next"], headers=headers).json()
    assert [row["id"] for row in third["clusters"]] == [created[6], added]
    assert third["next"] is None


def test_a_short_first_page_says_its_total_without_a_next_link(client: Client) -> None:
    name = hub()
    policy(name, "p1")
    body = client.get(f"/api/policies/?hub={name}", headers=reader()).json()
    assert body["count"] == 1 and body["next"] is None and names(body, "policies") == ["p1"]


def test_the_page_size_has_a_maximum_and_a_thousand_hubs_are_paged(client: Client) -> None:
    Hub.objects.bulk_create([Hub(name=f"bulk-{i:04d}") for i in range(MAX_LIMIT + 5)])
    headers = reader()
    first = client.get("/api/hubs/?limit=5000", headers=headers).json()
    assert len(first["hubs"]) == MAX_LIMIT and first["count"] == MAX_LIMIT + 5
    assert f"limit={MAX_LIMIT}" in first["next"] and "after=bulk-0999" in first["next"]
    rest = client.get(first["next"], headers=headers).json()
    assert names(rest, "hubs") == [f"bulk-{i:04d}" for i in range(MAX_LIMIT, MAX_LIMIT + 5)]
    assert rest["next"] is None

    default = client.get("/api/hubs/", headers=headers).json()
    assert len(default["hubs"]) == 100


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=0", "at least 1"),
        ("limit=ten", "not an integer"),
        ("after=abc", "not an integer"),
        ("lable=env=prod", "unknown parameter 'lable'"),
        ("state=gone", "not one of live, deleted, all"),
        ("hub=a&hub=b", "given 2 times"),
        ("label==x", "label=key=value"),
        ("search=a%00b", "NUL"),
    ],
)
def test_a_bad_query_parameter_is_a_json_400(client: Client, query: str, message: str) -> None:
    response = client.get(f"/api/clusters/?{query}", headers=reader())
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert message in response.json()["error"]


def test_clusters_are_filtered_by_hub_name_state_and_labels(client: Client) -> None:
    first, second = hub(), hub()
    cluster(first, "prod-east", {"env": "prod", "cloud": "aws"})
    cluster(first, "prod-west", {"env": "prod", "cloud": "gcp"})
    cluster(first, "dev-1", {"env": "dev"})
    cluster(first, "prod-old", {"env": "prod"}, deleted=True)
    cluster(second, "prod-other", {"env": "prod"})
    headers = reader()

    def listed(query: str) -> list[str]:
        response = client.get(f"/api/clusters/?{query}", headers=headers)
        assert response.status_code == 200, response.content
        return sorted(names(response.json(), "clusters"))

    assert listed(f"hub={first}") == ["dev-1", "prod-east", "prod-west"]
    assert listed(f"hub={first}&state=deleted") == ["prod-old"]
    assert listed(f"hub={first}&state=all") == ["dev-1", "prod-east", "prod-old", "prod-west"]
    assert listed(f"hub={first}&search=PROD") == ["prod-east", "prod-west"]
    assert listed("label=env=prod") == ["prod-east", "prod-other", "prod-west"]
    assert listed("label=env=prod&label=cloud=gcp") == ["prod-west"]
    assert listed("label=cloud") == ["prod-east", "prod-west"]
    assert listed("hub=nobody") == []

    body = client.get(f"/api/clusters/?hub={second}", headers=headers).json()
    (row,) = body["clusters"]
    assert row["hub"] == second and row["labels"] == {"env": "prod"}
    assert row["payload"]["metadata"]["name"] == "prod-other" and row["deleted_at"] is None


def test_policies_are_filtered_by_hub_name_state_and_policy_id(client: Client) -> None:
    name = hub()
    wanted = policy(name, "require-labels")
    policy(name, "limit-memory")
    policy(name, "old-policy", deleted=True)
    headers = reader()

    body = client.get(f"/api/policies/?hub={name}", headers=headers).json()
    assert sorted(names(body, "policies")) == ["limit-memory", "require-labels"]
    body = client.get(f"/api/policies/?policy_id={wanted.policy_id}", headers=headers).json()
    assert names(body, "policies") == ["require-labels"]
    assert body["policies"][0]["policy_id"] == str(wanted.policy_id)
    body = client.get(f"/api/policies/?hub={name}&search=LIMIT", headers=headers).json()
    assert names(body, "policies") == ["limit-memory"]
    body = client.get(f"/api/policies/?hub={name}&state=deleted", headers=headers).json()
    assert names(body, "policies") == ["old-policy"]
    assert client.get("/api/policies/?policy_id=nope", headers=headers).status_code == 400


def test_compliance_is_filtered_and_names_its_policy(client: Client) -> None:
    name = hub()
    known = policy(name, "require-labels")
    unknown_policy = uuid.uuid4()
    compliance(name, known.policy_id, "c1", "compliant")
    compliance(name, known.policy_id, "c2", "non_compliant")
    compliance(name, unknown_policy, "c1", "pending")
    compliance(hub(), known.policy_id, "c1", "non_compliant")  # another hub's policy of the same UID
    headers = reader()

    def listed(query: str) -> list[tuple[str, str, str | None]]:
        response = client.get(f"/api/compliance/?hub={name}&{query}", headers=headers)
        assert response.status_code == 200, response.content
        rows = response.json()["compliance"]
        return sorted((r["cluster_name"], r["compliance"], r["policy_name"]) for r in rows)

    assert listed("") == [
        ("c1", "compliant", "require-labels"),
        ("c1", "pending", None),
        ("c2", "non_compliant", "require-labels"),
    ]
    assert listed("compliance=non_compliant") == [("c2", "non_compliant", "require-labels")]
    assert listed(f"policy_id={unknown_policy}") == [("c1", "pending", None)]
    assert listed("cluster=c1") == [("c1", "compliant", "require-labels"), ("c1", "pending", None)]
    assert listed("search=2") == [("c2", "non_compliant", "require-labels")]
    assert client.get("/api/compliance/?compliance=bad", headers=headers).status_code == 400


def test_hubs_are_filtered_by_state_and_name(client: Client) -> None:
    hub("alpha-east")
    hub("alpha-west", state=Hub.State.INACTIVE)
    hub("beta")
    headers = reader()
    assert names(client.get("/api/hubs/?search=ALPHA", headers=headers).json(), "hubs") == ["alpha-east", "alpha-west"]
    assert names(client.get("/api/hubs/?state=inactive", headers=headers).json(), "hubs") == ["alpha-west"]


@pytest.mark.parametrize(
    ("url", "method", "status", "allow"),
    [
        ("/api/nope/", "get", 404, None),
        ("/api", "get", 404, None),
        ("/api/hubs", "get", 404, None),
        ("/api/resync-requests/abc/", "get", 404, None),
        ("/api/resync-requests/99999999999999999999/", "get", 404, None),
        ("/api/hubs/nobody/", "get", 404, None),
        ("/api/hubs/", "post", 405, "GET"),
        ("/api/clusters/", "delete", 405, "GET"),
        ("/api/resync/", "get", 405, "POST"),
    ],
)
def test_unknown_paths_and_wrong_methods_answer_json(
    client: Client, url: str, method: str, status: int, allow: str | None
) -> None:
    response = getattr(client, method)(url, headers=reader())
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]
    if allow is not None:
        assert response["Allow"] == allow


def test_a_missing_slash_is_named_in_the_404(client: Client) -> None:
    assert "did you mean /api/hubs/ ?" in client.get("/api/hubs").json()["error"]


@pytest.mark.parametrize(
    ("url", "make"),
    [
        ("/api/hubs/?limit=1000", lambda n: Hub.objects.bulk_create([Hub(name=f"q-{uuid.uuid4()}") for _ in range(n)])),
        ("/api/clusters/", lambda n: [cluster("qh", f"c{i}") for i in range(n)]),
        ("/api/policies/", lambda n: [policy("qh", f"p{i}") for i in range(n)]),
        (
            "/api/compliance/",
            lambda n: [compliance("qh", policy("qh", f"p{i}").policy_id, "c", "pending") for i in range(n)],
        ),
        ("/api/clusters/?limit=2", lambda n: [cluster("qh", f"c{i}") for i in range(n)]),
    ],
)
def test_a_list_costs_the_same_queries_for_3_rows_as_for_30(client: Client, url: str, make: Any) -> None:
    hub("qh")
    headers = reader()
    client.get(url, headers=headers)  # the token's first use is written once; not part of what is compared
    make(3)
    with CaptureQueriesContext(connection) as few:
        small = client.get(url, headers=headers)
    make(27)
    with CaptureQueriesContext(connection) as many:
        large = client.get(url, headers=headers)
    assert small.status_code == large.status_code == 200
    key = next(k for k in large.json() if k not in ("count", "next"))
    assert len(large.json()[key]) > len(small.json()[key]) or "limit=2" in url
    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]


def test_the_command_prints_a_token_once_and_stores_only_its_hash(client: Client) -> None:
    user_with("view_hub", username="ci-user")
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", "ci-user", "--name", "nightly", "--expires", "30d", stdout=out, stderr=err)
    token = out.getvalue().strip()
    record = ApiToken.objects.get()
    assert record.name == "nightly" and record.user.username == "ci-user"
    assert record.key_hash == hash_token(token) and token not in record.key_hash
    assert record.key_prefix == token[:8] and len(token) >= 43
    assert record.expires_at is not None
    assert timedelta(days=29, hours=23) < record.expires_at - timezone.now() <= timedelta(days=30)
    assert "shown once" in err.getvalue() and token not in err.getvalue()
    assert client.get("/api/hubs/", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_a_token_without_expiry_never_expires() -> None:
    user_with(username="forever")
    call_command("create_api_token", "forever", "--name", "x", stdout=io.StringIO(), stderr=io.StringIO())
    assert ApiToken.objects.get().expires_at is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody", "--name", "x"], "no user 'nobody'"),
        (["sleeper", "--name", "x"], "inactive"),
        (["someone", "--name", "x", "--expires", "soon"], "--expires"),
        (["someone", "--name", "x", "--expires", "0s"], "longer than zero"),
        (["someone", "--name", "  "], "must not be empty"),
        (["someone", "--name", "n" * 101], "at most 100"),
    ],
)
def test_the_command_refuses_what_would_make_a_useless_token(args: list[str], message: str) -> None:
    user_with(username="someone")
    User.objects.create_user("sleeper", is_active=False)
    with pytest.raises(CommandError, match=message):
        call_command("create_api_token", *args, stdout=io.StringIO(), stderr=io.StringIO())
    assert not ApiToken.objects.exists()


def test_the_admin_lists_and_revokes_tokens_but_never_shows_the_hash(admin_client: Client, client: Client) -> None:
    user = user_with("view_hub", username="scripted")
    record, token = issue_token(user, "deploy-bot", timezone.now())
    listing = admin_client.get("/admin/manager/apitoken/").content.decode()
    assert "deploy-bot" in listing and record.key_prefix in listing and "create_api_token" in listing
    assert record.key_hash not in listing
    page = admin_client.get(f"/admin/manager/apitoken/{record.pk}/change/")
    assert page.status_code == 200
    assert record.key_hash not in page.content.decode() and "deploy-bot" in page.content.decode()
    assert admin_client.get("/admin/manager/apitoken/add/").status_code == 403

    done = admin_client.post(
        "/admin/manager/apitoken/", {"action": "revoke", "_selected_action": [record.pk]}, follow=True
    )
    assert done.status_code == 200 and "1 token(s) revoked" in done.content.decode()
    assert client.get("/api/hubs/", headers={"Authorization": f"Bearer {token}"}).json() == {"error": "token expired"}
    assert "deploy-bot" in admin_client.get("/admin/manager/apitoken/?expiry=expired").content.decode()
    assert "deploy-bot" not in admin_client.get("/admin/manager/apitoken/?expiry=live").content.decode()

    deleted = admin_client.post(f"/admin/manager/apitoken/{record.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302 and not ApiToken.objects.exists()


def test_a_hub_with_more_resync_requests_costs_no_more_queries(client: Client) -> None:
    name = hub()
    headers = reader()
    call_command("request_resync", "--hub", name, stdout=io.StringIO())
    client.get(f"/api/hubs/{name}/", headers=headers)  # the token's first use is written once
    with CaptureQueriesContext(connection) as one:
        first = client.get(f"/api/hubs/{name}/", headers=headers).json()
    for _ in range(4):
        call_command("request_resync", "--hub", name, stdout=io.StringIO())
    with CaptureQueriesContext(connection) as five:
        second = client.get(f"/api/hubs/{name}/", headers=headers).json()
    assert len(first["resync_requests"]) == 1 and len(second["resync_requests"]) == 5
    assert {r["progress"] for r in second["resync_requests"]} == {"pending"}
    assert len(five) == len(one), [q["sql"] for q in five.captured_queries]


@pytest.mark.parametrize(("after", "expected"), [("99999999999999999999999", []), ("-99999999999999999999999", ["c"])])
def test_an_after_beyond_any_id_is_answered_not_an_error(client: Client, after: str, expected: list[str]) -> None:
    cluster(hub(), "c")
    response = client.get(f"/api/clusters/?after={after}", headers=reader())
    assert response.status_code == 200
    assert names(response.json(), "clusters") == expected
