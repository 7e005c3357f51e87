"""Event type strings (reference section 2.1), the resync request contents, and topic naming."""

from __future__ import annotations

import re

import pytest

from globalhub.protocol.events import (
    BROADCAST,
    DEFAULT_SPEC_TOPIC,
    DEFAULT_STATUS_TOPIC_PREFIX,
    EVENT_TYPE_PREFIX,
    HUB_NAME_MAX,
    MANAGER_SOURCE,
    RESYNC_EVENT_TYPE,
    RESYNC_TYPES,
    EventType,
    hub_from_status_topic,
    status_topic,
    status_topic_pattern,
    validate_hub_name,
)

PREFIX = "io.open-cluster-management.operator.multiclusterglobalhubs."
# Every status type of reference section 2.1, by short key.
UPSTREAM_SHORT_KEYS = {
    "managedhub.heartbeat",
    "managedhub.info",
    "managedcluster",
    "event.managedcluster",
    "policy.localspec",
    "policy.localcompliance",
    "policy.localcompletecompliance",
    "event.localrootpolicy",
    "event.localreplicatedpolicy",
    "event.clustergroupupgrade",
    "security.alertcounts",
    "managedclustermigration",
}

EXPECTED = [
    (EventType.HEARTBEAT, "managedhub.heartbeat"),
    (EventType.HUB_INFO, "managedhub.info"),
    (EventType.MANAGED_CLUSTER, "managedcluster"),
    (EventType.MANAGED_CLUSTER_EVENT, "event.managedcluster"),
    (EventType.LOCAL_POLICY_SPEC, "policy.localspec"),
    (EventType.LOCAL_COMPLIANCE, "policy.localcompliance"),
    (EventType.LOCAL_COMPLETE_COMPLIANCE, "policy.localcompletecompliance"),
    (EventType.LOCAL_ROOT_POLICY_EVENT, "event.localrootpolicy"),
    (EventType.LOCAL_REPLICATED_POLICY_EVENT, "event.localreplicatedpolicy"),
    (EventType.CLUSTER_GROUP_UPGRADE_EVENT, "event.clustergroupupgrade"),
]


def test_the_prefix_is_upstreams() -> None:
    assert EVENT_TYPE_PREFIX == PREFIX


@pytest.mark.parametrize(("event_type", "short"), EXPECTED, ids=[short for _, short in EXPECTED])
def test_each_event_type_is_the_upstream_string(event_type: EventType, short: str) -> None:
    assert event_type.value == PREFIX + short
    assert str(event_type) == PREFIX + short
    assert event_type == PREFIX + short
    assert event_type.short == short


def test_every_event_type_is_listed_upstream_and_none_is_missing_from_the_table() -> None:
    assert {member.short for member in EventType} <= UPSTREAM_SHORT_KEYS
    assert set(EventType) == {event_type for event_type, _ in EXPECTED}


@pytest.mark.parametrize(("event_type", "short"), EXPECTED, ids=[short for _, short in EXPECTED])
def test_from_any_accepts_the_short_key_and_the_full_type(event_type: EventType, short: str) -> None:
    assert EventType.from_any(short) is event_type
    assert EventType.from_any(PREFIX + short) is event_type


@pytest.mark.parametrize(
    "name",
    [
        "",
        "managedclusters",
        "ManagedCluster",
        "Resync",
        PREFIX,
        PREFIX + "unknown",
        "policy.compliance",
        "io.open-cluster-management.operator.managedcluster",
        " managedcluster",
    ],
    ids=[
        "empty",
        "plural",
        "wrong-case",
        "spec-type",
        "prefix-only",
        "unknown-full",
        "unregistered-global-type",
        "wrong-prefix",
        "leading-space",
    ],
)
def test_from_any_rejects_unknown_names(name: str) -> None:
    with pytest.raises(ValueError, match="is not a valid EventType"):
        EventType.from_any(name)


def test_the_resync_request_types_are_exactly_upstreams_four_in_order() -> None:
    assert RESYNC_TYPES == (
        EventType.HUB_INFO,
        EventType.MANAGED_CLUSTER,
        EventType.LOCAL_POLICY_SPEC,
        EventType.LOCAL_COMPLIANCE,
    )
    assert [t.value for t in RESYNC_TYPES] == [
        PREFIX + "managedhub.info",
        PREFIX + "managedcluster",
        PREFIX + "policy.localspec",
        PREFIX + "policy.localcompliance",
    ]


def test_spec_direction_constants_are_upstreams() -> None:
    assert RESYNC_EVENT_TYPE == "Resync"
    assert MANAGER_SOURCE == "global-hub"
    assert BROADCAST == "broadcast"
    assert DEFAULT_SPEC_TOPIC == "gh-spec"
    assert DEFAULT_STATUS_TOPIC_PREFIX == "gh-status."


# --- topics ---------------------------------------------------------------------------------------------------------


def test_status_topic_is_the_prefix_and_the_hub() -> None:
    assert status_topic("hub1") == "gh-status.hub1"
    assert status_topic("hub1", prefix="test.status.") == "test.status.hub1"


def test_status_topic_rejects_a_bad_hub_name() -> None:
    with pytest.raises(ValueError, match="hub name 'hub 1'"):
        status_topic("hub 1")


@pytest.mark.parametrize(
    ("topic", "hub"),
    [
        ("gh-status.hub1", "hub1"),
        ("gh-status.hub-1.a_b", "hub-1.a_b"),
        ("gh-status.", None),
        ("gh-spec", None),
        ("gh-status", None),
        ("other.hub1", None),
        ("gh-status.hub 1", None),
        ("gh-status.hub/1", None),
        ("gh-status." + "h" * (HUB_NAME_MAX + 1), None),
    ],
    ids=["simple", "dots-dashes-underscores", "empty-hub", "spec", "no-dot", "other", "space", "slash", "too-long"],
)
def test_hub_from_status_topic(topic: str, hub: str | None) -> None:
    assert hub_from_status_topic(topic) == hub


def test_hub_from_status_topic_with_a_custom_prefix() -> None:
    assert hub_from_status_topic("t.s.hub9", prefix="t.s.") == "hub9"
    assert hub_from_status_topic("gh-status.hub9", prefix="t.s.") is None


def test_hub_from_status_topic_inverts_status_topic() -> None:
    for hub in ["hub1", "a", "H-2.x_y", "h" * HUB_NAME_MAX]:
        assert hub_from_status_topic(status_topic(hub)) == hub


def test_status_topic_pattern_is_a_librdkafka_regex_subscription() -> None:
    assert status_topic_pattern().startswith("^")


@pytest.mark.parametrize(
    ("topic", "matches"),
    [
        ("gh-status.hub1", True),
        ("gh-status.hub-1.a_b", True),
        ("gh-status.", False),
        ("gh-spec", False),
        ("gh-status", False),
        ("gh-statusXhub1", False),
        ("xgh-status.hub1", False),
        ("gh-status.hub 1", False),
        ("gh-status.hub/1", False),
    ],
    ids=["hub1", "dots-dashes", "empty-hub", "spec", "no-dot", "dot-not-a-wildcard", "prefixed", "space", "slash"],
)
def test_status_topic_pattern_matches_only_hub_status_topics(topic: str, matches: bool) -> None:
    pattern = status_topic_pattern()
    assert (re.match(pattern, topic) is not None) is matches
    assert (re.fullmatch(pattern[1:], topic) is not None) is matches


def test_status_topic_pattern_escapes_a_custom_prefix() -> None:
    pattern = status_topic_pattern("a.b+")
    assert re.match(pattern, "a.b+hub1")
    assert not re.match(pattern, "aXb+hub1")
    assert not re.match(pattern, "a.bbhub1")


# --- hub names ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["hub1", "a", "HUB-2", "hub.name_1", "h" * HUB_NAME_MAX],
    ids=["simple", "one-char", "upper-dash", "dot-underscore", "max-length"],
)
def test_validate_hub_name_accepts_topic_safe_names(name: str) -> None:
    assert validate_hub_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "h" * (HUB_NAME_MAX + 1), "hub/1", "a/b/c", "hub 1", " hub1", "hub1\n", "hüb", "hub:1", "hub*"],
    ids=["empty", "too-long", "slash", "slashes", "space", "leading-space", "newline", "non-ascii", "colon", "star"],
)
def test_validate_hub_name_rejects_names_unusable_in_a_topic(name: str) -> None:
    with pytest.raises(ValueError) as raised:
        validate_hub_name(name)
    assert repr(name) in str(raised.value)
    assert f"1-{HUB_NAME_MAX} characters" in str(raised.value)
