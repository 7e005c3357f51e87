"""The admin pages of what the hubs reported and of the bookkeeping: they render, they are read-only, and they
show what an operator needs (cluster labels and versions, compliance per policy, dead letters' raw bytes)."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from agent_tasks.simulate import make_cluster, make_policy
from globalhub.manager.admin.bookkeeping import DISPLAY_CAP
from globalhub.manager.ingest import deadletters
from globalhub.manager.ingest.pipeline import ingest_batch
from globalhub.manager.ingest.records import Record, Rejected
from globalhub.manager.models import (
    Compliance,
    ConsumedPosition,
    DeadLetter,
    Divergence,
    Hub,
    HubInfo,
    LocalCompliance,
    LocalPolicy,
    LocalPolicyEvent,
    LocalRootPolicyEvent,
    ManagedCluster,
    ManagedClusterEvent,
    ResyncProgress,
    ResyncRequest,
    TypeVersion,
)
from globalhub.manager.resync_requests import create_request
from globalhub.protocol.bundles import ObjectMetadata, dumps, frame_resync
from globalhub.protocol.events import EventType
from globalhub.protocol.objects import cluster_claim_id
from tests.helpers import frame_message, record_of, status_message

pytestmark = pytest.mark.django_db

PREFIX = "gh-status."


def cluster_payload(hub: str, index: int, **labels: str) -> dict[str, Any]:
    payload = make_cluster(hub, index, random.Random(index))
    payload["metadata"]["labels"].update(labels)
    return payload


def add_cluster(hub: str, index: int, *, deleted: bool = False, **labels: str) -> ManagedCluster:
    payload = cluster_payload(hub, index, **labels)
    now = timezone.now()
    return ManagedCluster.objects.create(
        hub_id=hub,
        cluster_id=str(cluster_claim_id(payload)),
        cluster_name=payload["metadata"]["name"],
        payload=payload,
        created_at=now,
        updated_at=now,
        deleted_at=now if deleted else None,
    )


def add_policy(hub: str, name: str, *, deleted: bool = False) -> LocalPolicy:
    payload = make_policy(1, random.Random(1))
    now = timezone.now()
    return LocalPolicy.objects.create(
        hub_id=hub,
        policy_id=uuid.uuid4(),
        policy_name=name,
        payload=payload,
        created_at=now,
        updated_at=now,
        deleted_at=now if deleted else None,
    )


def add_compliance(policy: LocalPolicy, cluster: str, status: str) -> LocalCompliance:
    return LocalCompliance.objects.create(
        hub_id=policy.hub_id,
        policy_id=policy.policy_id,
        cluster_name=cluster,
        compliance=status,
        updated_at=timezone.now(),
    )


@pytest.fixture
def hub() -> str:
    return Hub.objects.create(name=f"hub-{uuid.uuid4().hex[:8]}", last_heartbeat=timezone.now()).name


@pytest.fixture
def one_of_each(hub: str) -> dict[str, Any]:
    """One row of every model whose page is read-only, by the model's admin URL name."""
    now = timezone.now()
    cluster = add_cluster(hub, 1)
    policy = add_policy(hub, "policy-one")
    event_fields = {"hub_id": hub, "event_name": "e", "created_at": now, "received_at": now}
    return {
        "managedcluster": cluster,
        "localpolicy": policy,
        "localcompliance": add_compliance(policy, cluster.cluster_name, Compliance.COMPLIANT),
        "hubinfo": HubInfo.objects.create(
            hub_id=hub, cluster_id=uuid.uuid4(), payload={"consoleURL": "https://c"}, created_at=now, updated_at=now
        ),
        "managedclusterevent": ManagedClusterEvent.objects.create(**event_fields),
        "localrootpolicyevent": LocalRootPolicyEvent.objects.create(**event_fields),
        "localpolicyevent": LocalPolicyEvent.objects.create(**event_fields),
        "deadletter": DeadLetter.objects.create(
            topic=PREFIX + hub, partition=0, offset=3, reason="bad", key=b"k", value=b"v", headers=[["ce_id", "1"]]
        ),
        "consumedposition": ConsumedPosition.objects.create(topic=PREFIX + hub, partition=0, next_offset=4),
        "typeversion": TypeVersion.objects.create(
            hub_id=hub, event_type=EventType.MANAGED_CLUSTER.value, generation=1, value=2
        ),
        "resyncprogress": ResyncProgress.objects.create(
            hub_id=hub, event_type=EventType.MANAGED_CLUSTER.value, resync_id="r1", started_at=now
        ),
        "divergence": Divergence.objects.create(
            hub_id=hub,
            event_type=EventType.MANAGED_CLUSTER.value,
            seen_at=now,
            expected_count=2,
            found_count=1,
            expected_hash="a",
            found_hash="b",
        ),
        "resyncrequest": create_request(hub, None, ResyncRequest.Reason.OPERATOR, "test"),
    }


def test_every_page_renders_and_none_adds_changes_or_deletes(admin_client: Client, one_of_each: dict[str, Any]) -> None:
    for model, row in one_of_each.items():
        listing = admin_client.get(f"/admin/manager/{model}/")
        assert listing.status_code == 200, model
        actions = listing.context["action_form"].fields["action"].choices if listing.context.get("action_form") else []
        assert "delete_selected" not in {name for name, _ in actions}, model
        assert f"/admin/manager/{model}/add/" not in listing.content.decode(), model

        page = admin_client.get(f"/admin/manager/{model}/{row.pk}/change/")
        assert page.status_code == 200, model
        html = page.content.decode()
        assert 'name="_save"' not in html and 'name="_continue"' not in html, model
        assert f"/admin/manager/{model}/{row.pk}/delete/" not in html, model

        assert admin_client.get(f"/admin/manager/{model}/add/").status_code == 403, model
        assert admin_client.post(f"/admin/manager/{model}/{row.pk}/delete/", {"post": "yes"}).status_code == 403
        assert type(row).objects.filter(pk=row.pk).exists(), model
        deleting = admin_client.post(
            f"/admin/manager/{model}/", {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"}
        )
        assert deleting.status_code in (200, 302), model
        assert type(row).objects.filter(pk=row.pk).exists(), model


def test_the_cluster_list_shows_availability_versions_cloud_vendor_and_labels(admin_client: Client, hub: str) -> None:
    cluster = add_cluster(hub, 1, cloud="Amazon", vendor="OpenShift", openshiftVersion="4.16.3")
    cluster.payload["status"]["conditions"][-1]["status"] = "False"
    ManagedCluster.objects.filter(pk=cluster.pk).update(payload=cluster.payload)

    page = admin_client.get("/admin/manager/managedcluster/")
    assert len(page.context["cl"].result_list) == 1
    html = page.content.decode()
    row_html = html[html.index(f">{cluster.cluster_name}<") :].split("</tr>")[0]
    for shown in ("False", "v1.29.7", "4.16.3", "Amazon", "OpenShift", "cloud=Amazon"):
        assert shown in row_html, shown


def test_the_label_filter_keeps_the_clusters_carrying_every_label_asked(admin_client: Client, hub: str) -> None:
    aws = add_cluster(hub, 1, cloud="Amazon", environment="prod")
    add_cluster(hub, 2, cloud="Google", environment="prod")
    aws_dev = add_cluster(hub, 3, cloud="Amazon", environment="dev")

    def names(query: str) -> set[str]:
        response = admin_client.get(f"/admin/manager/managedcluster/?{query}")
        assert response.status_code == 200
        return {c.cluster_name for c in response.context["cl"].result_list}

    assert names("label=cloud%3DAmazon") == {aws.cluster_name, aws_dev.cluster_name}
    assert names("label=cloud%3DAmazon%2C+environment%3Dprod") == {aws.cluster_name}
    assert names("label=cloud%3DNowhere") == set()
    assert len(names("label=environment")) == 3  # the label is set, whatever its value
    assert 'name="label"' in admin_client.get("/admin/manager/managedcluster/").content.decode()
    refused = admin_client.get("/admin/manager/managedcluster/?label=%3Dx")  # no key: a bad filter
    assert refused.status_code == 302 and "e=1" in refused["Location"]


@pytest.mark.parametrize("model", ["managedcluster", "localpolicy"])
def test_live_rows_are_shown_by_default_and_deleted_ones_behind_the_filter(
    admin_client: Client, hub: str, model: str
) -> None:
    live: ManagedCluster | LocalPolicy
    deleted: ManagedCluster | LocalPolicy
    if model == "managedcluster":
        live, deleted = add_cluster(hub, 1), add_cluster(hub, 2, deleted=True)
    else:
        live, deleted = add_policy(hub, "live"), add_policy(hub, "deleted", deleted=True)

    def shown(query: str) -> set[int]:
        return {r.pk for r in admin_client.get(f"/admin/manager/{model}/{query}").context["cl"].result_list}

    assert shown("") == {live.pk}
    assert shown("?state=live") == {live.pk}
    assert shown("?state=deleted") == {deleted.pk}
    assert shown("?state=all") == {live.pk, deleted.pk}


def test_the_payload_is_pretty_printed_in_a_collapsible_block(admin_client: Client, hub: str) -> None:
    cluster = add_cluster(hub, 1)
    html = admin_client.get(f"/admin/manager/managedcluster/{cluster.pk}/change/").content.decode()
    block = html[html.index('<details id="gh-payload">') :].split("</details>")[0]
    assert "<pre" in block
    assert "\n  &quot;apiVersion&quot;: &quot;cluster.open-cluster-management.io/v1&quot;," in block
    policy = add_policy(hub, "p")
    assert 'id="gh-payload"' in admin_client.get(f"/admin/manager/localpolicy/{policy.pk}/change/").content.decode()


def test_compliance_names_its_policy_with_a_link_and_is_searched_by_policy_name(admin_client: Client, hub: str) -> None:
    wanted = add_policy(hub, "require-labels")
    other = add_policy(hub, "limit-memory")
    add_compliance(wanted, "c1", Compliance.NON_COMPLIANT)
    add_compliance(other, "c2", Compliance.COMPLIANT)
    orphan_id = uuid.uuid4()
    LocalCompliance.objects.create(
        hub_id=hub, policy_id=orphan_id, cluster_name="c3", compliance=Compliance.PENDING, updated_at=timezone.now()
    )

    page = admin_client.get("/admin/manager/localcompliance/")
    html = page.content.decode()
    assert f'<a href="/admin/manager/localpolicy/{wanted.pk}/change/">require-labels</a>' in html
    assert "(not reported)" in html  # compliance of a policy the hub has not reported (yet)

    found = admin_client.get("/admin/manager/localcompliance/?q=require").context["cl"].result_list
    assert [r.cluster_name for r in found] == ["c1"]
    by_id = admin_client.get(f"/admin/manager/localcompliance/?policy_id={orphan_id}").context["cl"].result_list
    assert [r.cluster_name for r in by_id] == ["c3"]


def test_each_policy_counts_its_compliant_non_compliant_and_pending_clusters(admin_client: Client, hub: str) -> None:
    policy = add_policy(hub, "counted")
    for i, status in enumerate(
        [Compliance.COMPLIANT] * 3 + [Compliance.NON_COMPLIANT] * 2 + [Compliance.PENDING] + [Compliance.UNKNOWN]
    ):
        add_compliance(policy, f"cluster-{i}", status)
    add_policy(hub, "nothing-yet")
    elsewhere = Hub.objects.create(name=f"{hub}-other").name
    twin = LocalPolicy.objects.create(
        hub_id=elsewhere,
        policy_id=policy.policy_id,
        policy_name="counted",
        payload={},
        created_at=policy.created_at,
        updated_at=policy.updated_at,
    )  # the same policy id on another hub: its rows are not counted with these
    add_compliance(twin, "cluster-x", Compliance.NON_COMPLIANT)

    page = admin_client.get("/admin/manager/localpolicy/")
    rows = {
        (p.hub_id, p.policy_name): (p._compliant, p._non_compliant, p._pending) for p in page.context["cl"].result_list
    }
    assert rows[(hub, "counted")] == (3, 2, 1)
    assert rows[(hub, "nothing-yet")] == (0, 0, 0)
    assert rows[(elsewhere, "counted")] == (0, 1, 0)
    link = f"policy_id={policy.policy_id}&amp;compliance__exact=non_compliant"
    assert link in page.content.decode()
    drill = admin_client.get(
        f"/admin/manager/localcompliance/?hub__name__exact={hub}&policy_id={policy.policy_id}&compliance__exact=non_compliant"
    )
    assert sorted(r.cluster_name for r in drill.context["cl"].result_list) == ["cluster-3", "cluster-4"]


def test_a_dead_letter_shows_its_value_as_text_capped_and_downloads_it_whole(admin_client: Client, hub: str) -> None:
    value = ("é" * (DISPLAY_CAP // 2 + 100)).encode()  # more than the cap, in two-byte characters
    letter = DeadLetter.objects.create(
        topic=PREFIX + hub, partition=0, offset=1, reason="r", key=b"\xff\x00k", value=value
    )

    html = admin_client.get(f"/admin/manager/deadletter/{letter.pk}/change/").content.decode()
    shown = html[html.index('<pre id="gh-dead-letter-value"') :].split("</pre>")[0]
    assert shown.count("é") == DISPLAY_CAP // 2
    assert f"{len(value):,} bytes as UTF-8 text; cut: the first {DISPLAY_CAP:,} bytes are shown" in html
    key = html[html.index('<pre id="gh-dead-letter-key"') :].split("</pre>")[0]
    assert "ff00 6b" in key and "bytes as hex" in html

    download = admin_client.get(f"/admin/manager/deadletter/{letter.pk}/download/value/")
    assert download.status_code == 200
    assert download["Content-Type"] == "application/octet-stream"
    assert f'filename="dead-letter-{letter.pk}-value.bin"' in download["Content-Disposition"]
    assert download.content == value
    assert admin_client.get(f"/admin/manager/deadletter/{letter.pk}/download/key/").content == b"\xff\x00k"
    assert admin_client.get(f"/admin/manager/deadletter/{letter.pk}/download/headers/").status_code == 404
    assert admin_client.get(f"/admin/manager/deadletter/{letter.pk + 1000}/download/value/").status_code == 404


def test_a_dead_letter_download_needs_staff_and_the_view_permission(client: Client, hub: str) -> None:
    letter = DeadLetter.objects.create(topic=PREFIX + hub, partition=0, offset=1, reason="r", value=b"secret")
    url = f"/admin/manager/deadletter/{letter.pk}/download/value/"
    assert client.get(url).status_code == 302  # to the login page
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get(url).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_deadletter"))
    staff = User.objects.get(pk=staff.pk)  # permissions are cached on the user object
    client.force_login(staff)
    assert client.get(url).content == b"secret"


def test_dead_letters_are_filtered_by_type_and_reason_class_and_searched_by_reason(
    admin_client: Client, hub: str
) -> None:
    common = {"topic": PREFIX + hub, "partition": 0}
    version = DeadLetter.objects.create(
        **common,
        offset=1,
        reason="missing extversion",
        reason_class="version",
        event_type=EventType.MANAGED_CLUSTER.value,
    )
    payload = DeadLetter.objects.create(
        **common,
        offset=2,
        reason="bad bundle shape: x",
        reason_class="payload",
        event_type=EventType.LOCAL_POLICY_SPEC.value,
    )

    def listed(query: str) -> set[int]:
        return {r.pk for r in admin_client.get(f"/admin/manager/deadletter/?{query}").context["cl"].result_list}

    assert listed("reason_class=version") == {version.pk}
    assert listed(f"event_type={EventType.LOCAL_POLICY_SPEC.value}") == {payload.pk}
    assert listed("q=bundle+shape") == {payload.pk}
    html = admin_client.get("/admin/manager/deadletter/").content.decode()
    assert "policy.localspec" in html and "received at" in html.lower()


# Each reason class, from the real ingest fed a bad record (as tests/test_ingest_managed_clusters.py does).


def _headers(message: Any, drop: str = "", **set_: str) -> list[tuple[str, bytes]]:
    return [(k, set_[k].encode() if k in set_ else v) for k, v in message.headers if k != drop]


def _good(hub: str) -> Any:
    return status_message(hub, EventType.MANAGED_CLUSTER, {"update": []})


BAD_RECORDS: dict[str, Any] = {
    "malformed": lambda hub: [(b"k", b'{"hello": 1}', [])],
    "version": lambda hub: [(_good(hub).key, _good(hub).value, _headers(_good(hub), drop="ce_extversion"))],
    "source": lambda hub: [
        (m.key, m.value, list(m.headers))
        for m in [status_message("someone-else", EventType.MANAGED_CLUSTER, {"update": []})]
    ],
    "unknown_type": lambda hub: [(_good(hub).key, _good(hub).value, _headers(_good(hub), ce_type="io.example.nope"))],
    "payload": lambda hub: [
        (m.key, m.value, list(m.headers)) for m in [status_message(hub, EventType.MANAGED_CLUSTER, [1, 2, 3])]
    ],
}


@pytest.mark.parametrize("kind", sorted(BAD_RECORDS))
def test_the_ingest_classifies_each_dead_letter(kind: str, hub: str) -> None:
    topic = PREFIX + hub
    records = [
        Record(topic=topic, partition=0, offset=i, key=key, value=value, headers=tuple(headers))
        for i, (key, value, headers) in enumerate(BAD_RECORDS[kind](hub))
    ]
    ingest_batch(records, topic_prefix=PREFIX)
    assert list(DeadLetter.objects.filter(topic=topic).values_list("reason_class", flat=True)) == [kind]


def test_a_resync_with_a_lost_frame_is_a_truncated_dead_letter(hub: str) -> None:
    objects = [cluster_payload(hub, i) for i in range(10)]
    pairs = [(ObjectMetadata(cluster_claim_id(o) or "", o["metadata"]["name"]), dumps(o)) for o in objects]
    frames = list(frame_resync(pairs, limit=8 * 1024))
    assert len(frames) >= 4
    records = [record_of(frame_message(hub, f), PREFIX + hub, i) for i, f in enumerate(frames) if i != 2]
    ingest_batch(records, topic_prefix=PREFIX)
    classes = set(DeadLetter.objects.filter(hub_name=hub).values_list("reason_class", flat=True))
    assert classes == {"truncated"}


def test_a_rejection_the_call_sites_do_not_know_is_other_and_an_explicit_class_wins() -> None:
    assert deadletters.reason_class(Rejected("something new")) == "other"
    assert deadletters.reason_class(Rejected("something new", hub="h", event_type="t")) == "payload"
    explicit = Rejected("not a CloudEvent: but said otherwise")
    explicit.reason_class = "source"  # type: ignore[attr-defined]
    assert deadletters.reason_class(explicit) == "source"
    assert set(deadletters.REASON_CLASSES) == {
        "malformed",
        "version",
        "source",
        "unknown_type",
        "truncated",
        "payload",
        "other",
    }


def test_the_hub_page_links_to_filters_that_exist(admin_client: Client, hub: str) -> None:
    """The filters the hub page links to (by hub) are accepted by these lists."""
    for url in (
        f"/admin/manager/managedcluster/?hub__name__exact={hub}",
        f"/admin/manager/localpolicy/?hub__name__exact={hub}",
        f"/admin/manager/localcompliance/?hub__name__exact={hub}",
        f"/admin/manager/deadletter/?hub_name={hub}",
    ):
        assert admin_client.get(url).status_code == 200, url
