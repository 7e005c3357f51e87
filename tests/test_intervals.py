"""Sync and resync intervals: upstream's defaults, environment overrides, run-time changes, and what is refused."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis

from agent_tasks.intervals import Intervals, interval_keys, parse_overrides, parse_setting
from agent_tasks.types import HEARTBEAT, HUB_INFO, LOCAL_COMPLIANCE, LOCAL_POLICY_SPECS, MANAGED_CLUSTERS
from globalhub.envconf import ConfigError

SECONDS = timedelta(seconds=1)


@pytest.fixture
def intervals_key(redis_client: redis.Redis, hub_name: str) -> Iterator[str]:
    key = f"gh:{hub_name}:agent:intervals"
    yield key
    redis_client.delete(key)


def intervals_for(client: redis.Redis, hub: str, env: str | None = None) -> Intervals:
    return Intervals(client, hub, environ={} if env is None else {"GH_AGENT_INTERVALS": env})


# --- defaults ------------------------------------------------------------------------------------------------------


def test_defaults_are_upstreams(redis_client: redis.Redis, hub_name: str) -> None:
    snapshot = intervals_for(redis_client, hub_name).snapshot()

    assert snapshot["managedhub.heartbeat"] == 60 * SECONDS
    assert snapshot["managedhub.info"] == 60 * SECONDS
    assert snapshot["managedcluster"] == 5 * SECONDS
    assert snapshot["policy.localspec"] == 5 * SECONDS
    assert snapshot["policy.localcompliance"] == 5 * SECONDS
    for name in ("managedhub.info", "managedcluster", "policy.localspec", "policy.localcompliance"):
        assert snapshot["resync." + name] == timedelta(hours=6), name


def test_sync_and_resync_read_a_types_interval(redis_client: redis.Redis, hub_name: str) -> None:
    intervals = intervals_for(redis_client, hub_name)

    assert intervals.sync(MANAGED_CLUSTERS) == 5 * SECONDS
    assert intervals.sync(HUB_INFO) == 60 * SECONDS
    assert intervals.resync(LOCAL_POLICY_SPECS) == timedelta(hours=6)
    snapshot = intervals.snapshot()
    assert intervals.sync(LOCAL_COMPLIANCE, snapshot) == 5 * SECONDS


def test_every_type_has_a_sync_key_and_only_resyncable_ones_a_resync_key() -> None:
    keys = interval_keys()

    assert {"managedhub.heartbeat", "managedhub.info", "managedcluster", "policy.localspec"} <= set(keys)
    assert "resync.managedcluster" in keys
    assert "resync.managedhub.info" in keys
    assert "resync.managedhub.heartbeat" not in keys


# --- environment ---------------------------------------------------------------------------------------------------


def test_the_environment_overrides_the_defaults(redis_client: redis.Redis, hub_name: str) -> None:
    intervals = intervals_for(redis_client, hub_name, "managedcluster=10s, resync.managedcluster=1h,managedhub.info=2m")

    snapshot = intervals.snapshot()

    assert snapshot["managedcluster"] == 10 * SECONDS
    assert snapshot["resync.managedcluster"] == timedelta(hours=1)
    assert snapshot["managedhub.info"] == timedelta(minutes=2)
    assert snapshot["policy.localspec"] == 5 * SECONDS  # untouched keys keep their defaults


def test_the_environment_is_read_from_the_process_environment_by_default(
    redis_client: redis.Redis, hub_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GH_AGENT_INTERVALS", "policy.localspec=30s")

    assert Intervals(redis_client, hub_name).snapshot()["policy.localspec"] == 30 * SECONDS


def test_empty_items_in_the_environment_are_skipped() -> None:
    assert parse_overrides("") == {}
    assert parse_overrides(" , managedcluster=1m ,") == {"managedcluster": timedelta(minutes=1)}


def test_a_bad_environment_setting_fails_loudly_when_intervals_are_built(
    redis_client: redis.Redis, hub_name: str
) -> None:
    with pytest.raises(ConfigError, match="unknown interval key 'managedclusters'"):
        intervals_for(redis_client, hub_name, "managedcluster=10s,managedclusters=10s")


# --- run time ------------------------------------------------------------------------------------------------------


def test_a_run_time_setting_is_visible_at_once(redis_client: redis.Redis, hub_name: str, intervals_key: str) -> None:
    reader = intervals_for(redis_client, hub_name)
    writer = intervals_for(redis_client, hub_name)  # another process's view of the same hub

    assert writer.set("resync.managedcluster=1h") == ("resync.managedcluster", timedelta(hours=1))

    assert reader.snapshot()["resync.managedcluster"] == timedelta(hours=1)
    assert reader.resync(MANAGED_CLUSTERS) == timedelta(hours=1)
    assert reader.runtime_settings() == {"resync.managedcluster": timedelta(hours=1)}


def test_run_time_beats_environment_beats_default(redis_client: redis.Redis, hub_name: str, intervals_key: str) -> None:
    intervals = intervals_for(redis_client, hub_name, "managedcluster=10s")
    intervals.set("managedcluster=250ms")
    intervals.set("policy.localspec=7s")

    snapshot = intervals.snapshot()
    assert snapshot["managedcluster"] == timedelta(milliseconds=250)
    assert snapshot["policy.localspec"] == 7 * SECONDS

    assert intervals.unset("managedcluster") is True
    assert intervals.unset("policy.localspec") is True

    snapshot = intervals.snapshot()
    assert snapshot["managedcluster"] == 10 * SECONDS  # back to the environment's value
    assert snapshot["policy.localspec"] == 5 * SECONDS  # back to the default
    assert intervals.runtime_settings() == {}


def test_unset_of_a_key_that_was_not_set_says_so(redis_client: redis.Redis, hub_name: str, intervals_key: str) -> None:
    assert intervals_for(redis_client, hub_name).unset("resync.policy.localspec") is False


def test_a_run_time_setting_applies_to_its_hub_only(
    redis_client: redis.Redis, hub_name: str, intervals_key: str
) -> None:
    intervals_for(redis_client, hub_name).set("managedcluster=1m")

    other = intervals_for(redis_client, hub_name + "-other")
    assert other.snapshot()["managedcluster"] == 5 * SECONDS


def test_a_later_set_replaces_the_earlier_one(redis_client: redis.Redis, hub_name: str, intervals_key: str) -> None:
    intervals = intervals_for(redis_client, hub_name)
    intervals.set("resync.managedhub.info=1h30m")
    intervals.set("resync.managedhub.info = 45m ")

    assert intervals.snapshot()["resync.managedhub.info"] == timedelta(minutes=45)
    assert intervals.resync(HUB_INFO) == timedelta(minutes=45)
    assert intervals.sync(HEARTBEAT) == 60 * SECONDS


# --- what is refused -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("managedclusters=5s", "unknown interval key 'managedclusters'"),
        ("resync.nope=1h", "unknown interval key 'resync.nope'"),
        ("resync.managedhub.heartbeat=1h", "unknown interval key 'resync.managedhub.heartbeat'"),
        ("managedcluster=soon", "duration 'soon'"),
        ("managedcluster=5 parsecs", "duration"),
        ("managedcluster=-5s", "duration"),
        ("managedcluster=", "empty duration"),
        ("managedcluster=nan", "not a finite number"),
        ("managedcluster=50ms", "shorter than 0.1s"),
        ("managedcluster=0s", "shorter than 0.1s"),
        ("managedcluster", "must look like <key>=<duration>"),
        ("managedcluster:5s", "must look like <key>=<duration>"),
    ],
)
def test_bad_settings_are_refused_with_a_reason(item: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_setting(item)


def test_the_shortest_allowed_interval_and_plain_seconds_are_accepted() -> None:
    assert parse_setting("managedcluster=100ms") == ("managedcluster", timedelta(milliseconds=100))
    assert parse_setting("managedcluster=10") == ("managedcluster", 10 * SECONDS)


def test_a_refused_run_time_setting_changes_nothing(
    redis_client: redis.Redis, hub_name: str, intervals_key: str
) -> None:
    intervals = intervals_for(redis_client, hub_name)

    with pytest.raises(ConfigError):
        intervals.set("resync.managedhub.heartbeat=1h")
    with pytest.raises(ConfigError):
        intervals.set("managedcluster=1ms")

    assert intervals.runtime_settings() == {}
    assert intervals.snapshot()["managedcluster"] == 5 * SECONDS


def test_unset_of_an_unknown_key_is_refused(redis_client: redis.Redis, hub_name: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("unknown interval key 'resync.managedhub.heartbeat'")):
        intervals_for(redis_client, hub_name).unset("resync.managedhub.heartbeat")
