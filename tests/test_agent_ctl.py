"""``python -m agent_tasks.ctl``: run-time interval changes, hand-queued resyncs and the status report."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis
import time_machine

from agent_tasks.ctl import main, status
from agent_tasks.kube.status import ResourceState, SourceStatus
from agent_tasks.metrics import AgentCollector
from agent_tasks.resync_queue import ResyncQueue
from agent_tasks.state import StateStore

NOW = datetime(2025, 6, 1, 8, 0, 0, tzinfo=UTC)


def at(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


@pytest.fixture
def hub(hub_name: str, redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This test's hub, as ``ctl`` finds it: ``HUB_NAME`` and ``REDIS_URL`` in the environment."""
    monkeypatch.setenv("HUB_NAME", hub_name)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("GH_AGENT_INTERVALS", raising=False)
    yield hub_name
    keys = list(redis_client.scan_iter(match=f"gh:{hub_name}:*"))
    if keys:
        redis_client.delete(*keys)


# --- set and unset -------------------------------------------------------------------------------------------------


def test_set_changes_a_resync_interval_that_status_then_shows(
    hub: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    last_resync = NOW.timestamp() - 600
    StateStore(redis_client, hub).update("managedcluster", last_resync=last_resync)

    assert main(["set", "resync.managedcluster=1h"]) == 0

    assert capsys.readouterr().out.strip() == f"{hub}: resync.managedcluster = 1h"
    report = status(redis_client, hub, now=NOW.timestamp())
    assert report["interval_settings"] == {"resync.managedcluster": "1h"}
    row = report["types"]["managedcluster"]
    assert row["resync_interval"] == "1h"
    assert row["next_resync_at"] == at(last_resync + 3600)
    assert report["types"]["policy.localspec"]["resync_interval"] == "6h"


def test_set_takes_several_settings_at_once(hub: str, redis_client: redis.Redis) -> None:
    assert main(["set", "managedcluster=250ms", "resync.managedhub.info=90m"]) == 0

    report = status(redis_client, hub)
    assert report["interval_settings"] == {"managedcluster": "0.25s", "resync.managedhub.info": "90m"}
    assert report["types"]["managedcluster"]["sync_interval"] == "0.25s"
    assert report["types"]["managedhub.info"]["resync_interval"] == "90m"


def test_unset_restores_the_default(hub: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    main(["set", "resync.managedcluster=1h"])
    capsys.readouterr()

    assert main(["unset", "resync.managedcluster"]) == 0
    assert capsys.readouterr().out.strip() == f"{hub}: resync.managedcluster back to its default"

    report = status(redis_client, hub)
    assert report["interval_settings"] == {}
    assert report["types"]["managedcluster"]["resync_interval"] == "6h"

    assert main(["unset", "resync.managedcluster"]) == 0
    assert capsys.readouterr().out.strip() == f"{hub}: resync.managedcluster was not set"


def test_an_environment_interval_shows_in_status_until_a_run_time_setting_overrides_it(
    hub: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GH_AGENT_INTERVALS", "managedcluster=10s")
    assert status(redis_client, hub)["types"]["managedcluster"]["sync_interval"] == "10s"

    main(["set", "managedcluster=1m"])
    assert status(redis_client, hub)["types"]["managedcluster"]["sync_interval"] == "1m"

    main(["unset", "managedcluster"])
    assert status(redis_client, hub)["types"]["managedcluster"]["sync_interval"] == "10s"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["set", "resync.managedclusters=1h"], "unknown interval key 'resync.managedclusters'"),
        (["set", "resync.managedhub.heartbeat=1h"], "unknown interval key 'resync.managedhub.heartbeat'"),
        (["set", "managedcluster=fast"], "duration 'fast'"),
        (["set", "managedcluster=10ms"], "shorter than"),
        (["set", "managedcluster"], "<key>=<duration>"),
        (["unset", "nope"], "unknown interval key 'nope'"),
        (["resync", "nope"], "unknown status type 'nope'"),
    ],
)
def test_a_bad_key_or_type_exits_2_with_the_reason_on_stderr(
    hub: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 2

    captured = capsys.readouterr()
    assert captured.err.startswith("error: ")
    assert message in captured.err
    assert captured.out == ""
    assert status(redis_client, hub)["interval_settings"] == {}
    assert ResyncQueue(redis_client, hub).length() == 0


# --- resync --------------------------------------------------------------------------------------------------------


def test_resync_queues_each_type_once_and_reports_how_many(
    hub: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["resync", "managedcluster", "policy.localspec", "managedcluster"]) == 0

    assert capsys.readouterr().out.strip() == f"{hub}: 2 of 3 queued (the others were already waiting)"
    assert [item.type for item in ResyncQueue(redis_client, hub).items()] == ["managedcluster", "policy.localspec"]


def test_resync_accepts_full_type_names(hub: str, redis_client: redis.Redis) -> None:
    assert main(["resync", "io.open-cluster-management.operator.multiclusterglobalhubs.policy.localcompliance"]) == 0

    assert [item.type for item in ResyncQueue(redis_client, hub).items()] == ["policy.localcompliance"]


def test_resync_of_the_heartbeat_is_refused_because_it_cannot_be_resynced(
    hub: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    # The spec listener counts a heartbeat request as an unknown type; the operator's command must not queue it
    # either, or the drain would run a "full resync" of the heartbeat.
    assert main(["resync", "managedhub.heartbeat"]) == 2

    assert "managedhub.heartbeat" in capsys.readouterr().err
    assert ResyncQueue(redis_client, hub).length() == 0


# --- status --------------------------------------------------------------------------------------------------------


def test_status_json_lists_the_queue_with_waiting_seconds(
    hub: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = ResyncQueue(redis_client, hub)
    queue.push(["policy.localspec"], now=NOW.timestamp() - 42)
    queue.push(["managedcluster"], now=NOW.timestamp() - 1.5)
    ResyncQueue(redis_client, hub).push(["managedcluster"], now=NOW.timestamp())  # coalesced: keeps its first time

    with time_machine.travel(NOW, tick=False):
        assert main(["status", "--json"]) == 0

    report = json.loads(capsys.readouterr().out)
    assert report["hub"] == hub
    assert report["queue"] == [
        {"type": "policy.localspec", "waiting_seconds": 42.0},
        {"type": "managedcluster", "waiting_seconds": 1.5},
    ]
    assert set(report["types"]) == {
        "managedhub.heartbeat",
        "managedhub.info",
        "managedcluster",
        "policy.localspec",
        "policy.localcompliance",
    }
    heartbeat = report["types"]["managedhub.heartbeat"]
    assert heartbeat["sync_interval"] == "1m"
    assert heartbeat["resync_interval"] is None
    assert heartbeat["next_resync_at"] is None
    assert report["types"]["managedcluster"]["next_sync_at"] == "now"
    assert report["types"]["managedcluster"]["version"] == "0.0"


def test_status_text_shows_the_queue_settings_and_listener_counts(
    hub: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    ResyncQueue(redis_client, hub).push(["managedhub.info"], now=NOW.timestamp() - 3)
    redis_client.hset(f"gh:{hub}:agent:listener", mapping={"requests": 4, "rejected": 1})
    main(["set", "resync.managedcluster=1h"])
    capsys.readouterr()

    with time_machine.travel(NOW, tick=False):
        assert main(["status"]) == 0

    out = capsys.readouterr().out
    assert f"hub {hub}" in out
    assert "resync queue: 1 waiting: managedhub.info (3.0s)" in out
    assert "run-time interval settings: resync.managedcluster=1h" in out
    assert "spec listener: rejected=1, requests=4" in out


# --- the Kubernetes source -----------------------------------------------------------------------------------------


def publish_source(client: redis.Redis, hub: str, now: float) -> None:
    healthy = ResourceState(connected=True, objects=3, last_event_at=now - 4.0, relists=2)
    failing = ResourceState(objects=0)
    failing.failed("list policies.policy.open-cluster-management.io on https://api: 403 Forbidden (…)", now - 1.0)
    healthy.type_objects = {"managedcluster": 3}
    failing.type_objects = {"policy.localspec": 0, "policy.localcompliance": 0}
    SourceStatus(client, hub).publish(
        {"source": "kubernetes", "server": "https://api", "credentials": "the pod's service account"},
        {"managedclusters": healthy, "policies": failing},
        now=now,
    )


def test_status_shows_the_kubernetes_source_per_resource_with_its_last_error(
    hub: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    publish_source(redis_client, hub, now)

    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "inventory source: kubernetes https://api via the pod's service account, running" in out
    assert re.search(r"managedclusters +connected +objects 3, last event \d+\.\ds ago, relists 2, errors 0", out)
    assert re.search(r"policies +DISCONNECTED +objects 0, .*errors 1, last error \(\d+\.\ds ago\): .*403", out)
    assert "inventory: managedcluster 3, policy.localcompliance 0, policy.localspec 0" in out

    report = status(redis_client, hub, now=now + 60)  # the watcher stopped writing its state a minute ago
    assert report["source"]["running"] is False
    assert report["source"]["resources"]["managedclusters"]["connected"] is False


def test_status_says_when_no_watcher_fills_the_inventory(hub: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"]) == 0
    assert "no Kubernetes watcher has run for this hub" in capsys.readouterr().out


def test_the_metrics_export_the_kubernetes_source(hub: str, redis_client: redis.Redis) -> None:
    publish_source(redis_client, hub, time.time())
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in AgentCollector(redis_client, hub).collect()
        for sample in family.samples
    }
    assert samples[("globalhub_agent_source_up", (("hub", hub),))] == 1.0
    clusters = (("hub", hub), ("resource", "managedclusters"))
    policies = (("hub", hub), ("resource", "policies"))
    assert samples[("globalhub_agent_source_connected", clusters)] == 1.0
    assert samples[("globalhub_agent_source_connected", policies)] == 0.0
    assert samples[("globalhub_agent_source_relists_total", clusters)] == 2.0
    assert samples[("globalhub_agent_source_errors_total", policies)] == 1.0
    assert samples[("globalhub_agent_source_objects", clusters)] == 3.0
    assert 3.0 < samples[("globalhub_agent_source_last_event_age_seconds", clusters)] < 60.0
    assert samples[("globalhub_agent_source_inventory_objects", (("hub", hub), ("type", "managedcluster")))] == 3.0
