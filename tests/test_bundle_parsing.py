"""``parse_generic_bundle``: upstream's GenericBundle shape (reference section 2.3) and what it rejects."""

from __future__ import annotations

import json
from typing import Any

import pytest

from globalhub.protocol.bundles import BundleError, GenericBundle, ObjectMetadata, parse_generic_bundle

MANAGED_BY = "global-hub.open-cluster-management.io/managed-by"

# A ManagedCluster as the ObjectEmitter sends it: managedFields removed, managed-by annotation added.
CLUSTER: dict[str, Any] = {
    "apiVersion": "cluster.open-cluster-management.io/v1",
    "kind": "ManagedCluster",
    "metadata": {
        "name": "cluster1",
        "uid": "6f1c2d3e-0000-4000-8000-000000000001",
        "annotations": {MANAGED_BY: "hub1"},
    },
    "spec": {"hubAcceptsClient": True},
    "status": {"clusterClaims": [{"name": "id.k8s.io", "value": "3f0b7a8e-1111-4222-8333-444455556666"}]},
}
# A local root Policy: status emptied, managedFields removed.
POLICY: dict[str, Any] = {
    "apiVersion": "policy.open-cluster-management.io/v1",
    "kind": "Policy",
    "metadata": {"name": "policy-a", "namespace": "default", "uid": "9c8b7a6d-0000-4000-8000-0000000000aa"},
    "spec": {"disabled": False, "remediationAction": "inform"},
    "status": {},
}


def parse_wire(text: str) -> GenericBundle:
    """Parse as the manager does: JSON bytes from the wire, then the shape check."""
    return parse_generic_bundle(json.loads(text))


# --- accepted shapes ------------------------------------------------------------------------------------------------


def test_an_empty_object_is_an_empty_bundle() -> None:
    bundle = parse_wire("{}")
    assert bundle == GenericBundle(update=[], delete=[], resync=[], resync_metadata=None)
    assert bundle.is_empty()


def test_an_update_bundle_of_managed_clusters() -> None:
    bundle = parse_wire(json.dumps({"update": [CLUSTER]}))
    assert bundle.update == [CLUSTER]
    assert bundle.delete == []
    assert bundle.resync == []
    assert bundle.resync_metadata is None
    assert not bundle.is_empty()


def test_create_is_folded_into_update_before_the_updates() -> None:
    second = {**CLUSTER, "metadata": {**CLUSTER["metadata"], "name": "cluster2"}}
    bundle = parse_wire(json.dumps({"update": [second], "create": [CLUSTER]}))
    assert bundle.update == [CLUSTER, second]


def test_delete_entries_are_object_metadata() -> None:
    bundle = parse_wire(
        '{"delete":[{"id":"3f0b7a8e-1111-4222-8333-444455556666","name":"cluster1"},'
        '{"id":"9c8b7a6d-0000-4000-8000-0000000000aa","ns":"default","name":"policy-a"}]}'
    )
    assert bundle.delete == [
        ObjectMetadata(id="3f0b7a8e-1111-4222-8333-444455556666", name="cluster1"),
        ObjectMetadata(id="9c8b7a6d-0000-4000-8000-0000000000aa", name="policy-a", namespace="default"),
    ]
    assert bundle.update == []
    assert not bundle.is_empty()


def test_a_resync_bundle_carries_full_objects() -> None:
    bundle = parse_wire(json.dumps({"resync": [POLICY]}))
    assert bundle.resync == [POLICY]
    assert bundle.update == []
    assert bundle.resync_metadata is None


def test_a_resync_metadata_bundle_lists_ids() -> None:
    bundle = parse_wire('{"resync_metadata":[{"id":"a","ns":"default","name":"policy-a"},{"id":"b"}]}')
    assert bundle.resync_metadata == [
        ObjectMetadata(id="a", name="policy-a", namespace="default"),
        ObjectMetadata(id="b"),
    ]


def test_hub_ha_metadata_fields_are_accepted() -> None:
    text = (
        '{"resync_metadata":[{"id":"u1","ns":"ns1","name":"n1","group":"policy.open-cluster-management.io",'
        '"version":"v1","kind":"Policy","inventory_begin":true,"complete":false}]}'
    )
    assert parse_wire(text).resync_metadata == [ObjectMetadata(id="u1", name="n1", namespace="ns1")]


def test_metadata_without_any_field_gets_an_empty_id() -> None:
    assert parse_wire('{"delete":[{}]}').delete == [ObjectMetadata(id="")]


def test_absent_resync_metadata_is_none_and_present_empty_is_an_empty_list() -> None:
    assert parse_wire('{"update":[]}').resync_metadata is None
    assert parse_wire('{"resync_metadata":[]}').resync_metadata == []


def test_every_key_at_once() -> None:
    payload = {
        "create": [CLUSTER],
        "update": [POLICY],
        "delete": [{"id": "d1"}],
        "resync": [CLUSTER, POLICY],
        "resync_metadata": [{"id": "m1"}, {"id": "m2"}],
    }
    bundle = parse_wire(json.dumps(payload))
    assert bundle.update == [CLUSTER, POLICY]
    assert bundle.delete == [ObjectMetadata(id="d1")]
    assert bundle.resync == [CLUSTER, POLICY]
    assert bundle.resync_metadata == [ObjectMetadata(id="m1"), ObjectMetadata(id="m2")]


def test_non_ascii_content_is_kept() -> None:
    obj = {"metadata": {"name": "clüster-ß", "uid": "u"}, "spec": {"note": "\U0001f680"}}
    assert parse_wire(json.dumps({"update": [obj]}, ensure_ascii=False)).update == [obj]


@pytest.mark.parametrize(
    "payload",
    [{"update": []}, {"delete": []}, {"resync": []}, {"create": [], "update": [], "delete": [], "resync": []}],
    ids=["update", "delete", "resync", "all-four"],
)
def test_empty_arrays_make_an_empty_bundle(payload: dict[str, Any]) -> None:
    assert parse_generic_bundle(payload).is_empty()


def test_an_empty_resync_metadata_list_is_empty_content() -> None:
    # Presence of the (empty) listing is still visible through ``resync_metadata is not None``.
    bundle = parse_generic_bundle({"resync_metadata": []})
    assert bundle.is_empty()
    assert bundle.resync_metadata == []


def test_parsing_does_not_mutate_the_input() -> None:
    payload = {"create": [CLUSTER], "update": [POLICY]}
    snapshot = json.dumps(payload, sort_keys=True)
    parse_generic_bundle(payload)
    assert json.dumps(payload, sort_keys=True) == snapshot


# --- rejected shapes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [("[]", "array"), ('[{"update":[]}]', "array"), ('"update"', "string"), ("null", "null"), ("42", "number")],
    ids=["empty-array", "array-of-bundle", "string", "null", "number"],
)
def test_a_payload_that_is_not_an_object_is_rejected(text: str, kind: str) -> None:
    with pytest.raises(BundleError, match=f"a generic bundle must be a JSON object, got {kind}"):
        parse_wire(text)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"updates": []}, "unknown bundle keys ['updates']"),
        ({"update": [], "Resync": []}, "unknown bundle keys ['Resync']"),
        ({"resyncMetadata": [], "extra": 1}, "unknown bundle keys ['extra', 'resyncMetadata']"),
    ],
    ids=["typo", "wrong-case", "two-unknown-sorted"],
)
def test_unknown_keys_are_rejected_and_named(payload: dict[str, Any], reason: str) -> None:
    with pytest.raises(BundleError) as raised:
        parse_generic_bundle(payload)
    assert str(raised.value) == reason


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"update": {}}, "update must be an array, got object"),
        ({"create": "x"}, "create must be an array, got string"),
        ({"delete": 1}, "delete must be an array, got number"),
        ({"resync": True}, "resync must be an array, got boolean"),
        ({"resync_metadata": {"id": "a"}}, "resync_metadata must be an array, got object"),
    ],
    ids=["update-object", "create-string", "delete-number", "resync-boolean", "resync-metadata-object"],
)
def test_a_key_that_is_not_an_array_is_rejected(payload: dict[str, Any], reason: str) -> None:
    with pytest.raises(BundleError) as raised:
        parse_generic_bundle(payload)
    assert str(raised.value) == reason


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"update": [CLUSTER, "cluster2"]}, "update[1] must be an object, got string"),
        ({"create": [None]}, "create[0] must be an object, got null"),
        ({"resync": [[POLICY]]}, "resync[0] must be an object, got array"),
        ({"delete": ["id-1"]}, "delete[0] must be an object, got string"),
        ({"resync_metadata": [{"id": "a"}, 7]}, "resync_metadata[1] must be an object, got number"),
    ],
    ids=["update-string", "create-null", "resync-array", "delete-string", "resync-metadata-number"],
)
def test_items_that_are_not_objects_are_rejected_with_their_index(payload: dict[str, Any], reason: str) -> None:
    with pytest.raises(BundleError) as raised:
        parse_generic_bundle(payload)
    assert str(raised.value) == reason


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"delete": [{"id": 5}]}, "delete[0].id must be a string"),
        ({"delete": [{"id": "a", "ns": ["default"]}]}, "delete[0].ns must be a string"),
        ({"resync_metadata": [{"id": "a"}, {"id": "b", "name": 1.5}]}, "resync_metadata[1].name must be a string"),
        ({"resync_metadata": [{"id": "a", "kind": {}}]}, "resync_metadata[0].kind must be a string"),
        ({"resync_metadata": [{"id": "a", "group": True}]}, "resync_metadata[0].group must be a string"),
        ({"resync_metadata": [{"id": "a", "version": 1}]}, "resync_metadata[0].version must be a string"),
        (
            {"resync_metadata": [{"id": "a", "inventory_begin": "yes"}]},
            "resync_metadata[0].inventory_begin must be a boolean",
        ),
        ({"delete": [{"id": "a", "complete": 1}]}, "delete[0].complete must be a boolean"),
    ],
    ids=[
        "numeric-id",
        "array-namespace",
        "float-name",
        "object-kind",
        "boolean-group",
        "numeric-version",
        "string-inventory-begin",
        "numeric-complete",
    ],
)
def test_metadata_fields_of_the_wrong_type_are_rejected(payload: dict[str, Any], reason: str) -> None:
    with pytest.raises(BundleError) as raised:
        parse_generic_bundle(payload)
    assert str(raised.value).startswith(reason)


def test_bundle_error_is_a_value_error() -> None:
    assert issubclass(BundleError, ValueError)
