"""``python -m agent_tasks.ctl``: run-time interval changes, hand-queued resyncs and the status report.

``ctl status`` is also the agent's healthcheck: it exits 1 when the agent is dead (its worker, beat or ticks have
left no liveness mark for a while) and refuses, with 2, a hub no agent ever ran for.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import time_machine

from agent_tasks.ctl import EXIT_UNKNOWN, main, status
from agent_tasks.kube.status import ResourceState, SourceStatus
from agent_tasks.liveness import BEAT, MARKS, TICK, WORKER, mark
from agent_tasks.metrics import AgentCollector
from agent_tasks.resync_queue import ResyncQueue
from agent_tasks.state import StateStore
from tests.helpers import Process, python_argv, start_agent, wait_for

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


def live_agent(client: redis.Redis, hub: str, now: float) -> None:
    """What a running agent leaves in Redis: its per-type state, and fresh liveness marks of worker, beat and ticks."""
    StateStore(client, hub).update("managedhub.heartbeat", cursor="0-0")
    for which in MARKS:
        mark(client, hub, which, now)


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
    live_agent(redis_client, hub, NOW.timestamp())

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
    live_agent(redis_client, hub, NOW.timestamp())

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
    live_agent(redis_client, hub, now)

    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "inventory source: kubernetes https://api via the pod's service account, running" in out
    assert re.search(r"managedclusters +connected +objects 3, last event \d+\.\ds ago, relists 2, errors 0", out)
    assert re.search(r"policies +DISCONNECTED +objects 0, .*errors 1, last error \(\d+\.\ds ago\): .*403", out)
    assert "inventory: managedcluster 3, policy.localcompliance 0, policy.localspec 0" in out

    report = status(redis_client, hub, now=now + 60)  # the watcher stopped writing its state a minute ago
    assert report["source"]["running"] is False
    assert report["source"]["resources"]["managedclusters"]["connected"] is False


def test_status_says_when_no_watcher_fills_the_inventory(
    hub: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    live_agent(redis_client, hub, time.time())
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


# --- live or dead --------------------------------------------------------------------------------------------------


def test_status_of_a_hub_without_agent_state_is_refused_with_exit_2(
    hub: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    ResyncQueue(redis_client, hub).push(["managedcluster"])  # a queue alone is not an agent

    assert main(["status"]) == 2
    assert main(["status", "--json"]) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"error: no agent state for hub {hub!r} in Redis" in captured.err
    assert "check HUB_NAME and REDIS_URL" in captured.err


def test_a_live_agent_reports_live_with_its_last_send_and_exits_0(
    hub: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    live_agent(redis_client, hub, NOW.timestamp() - 2)
    StateStore(redis_client, hub).count_sent("managedcluster", 3, NOW.timestamp() - 5)
    StateStore(redis_client, hub).count_sent("managedhub.heartbeat", 1, NOW.timestamp() - 40)

    with time_machine.travel(NOW, tick=False):
        assert main(["status"]) == 0
        first_line = capsys.readouterr().out.splitlines()[1]
        assert main(["status", "--json"]) == 0

    assert first_line == (
        "agent: live (worker seen 2 s ago, tick sent by beat 2 s ago, tick run by the worker 2 s ago; "
        f"last send {at(NOW.timestamp() - 5)} (managedcluster, 5 s ago))"
    )
    agent = json.loads(capsys.readouterr().out)["agent"]
    assert agent["live"] is True
    assert agent["seconds_since"] == {WORKER: 2.0, BEAT: 2.0, TICK: 2.0}
    assert agent["last_send_type"] == "managedcluster"


def test_an_agent_whose_beat_stopped_is_dead_and_exits_1_saying_what_stopped(
    hub: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    live_agent(redis_client, hub, NOW.timestamp() - 95)
    mark(redis_client, hub, WORKER, NOW.timestamp() - 1)  # the worker runs, but nothing sends it ticks

    with time_machine.travel(NOW, tick=False):
        assert main(["status"]) == 1

    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (
        "agent: DEAD (no tick sent by beat for 95 s; no tick run by the worker for 95 s; worker seen 1 s ago; "
        "no send since the agent started)"
    )


def test_an_agent_that_never_ran_a_tick_is_dead_until_it_does(hub: str, redis_client: redis.Redis) -> None:
    now = NOW.timestamp()
    StateStore(redis_client, hub).update("managedhub.heartbeat", cursor="0-0")  # started, then nothing
    mark(redis_client, hub, WORKER, now)
    mark(redis_client, hub, BEAT, now)

    agent = status(redis_client, hub, now=now)["agent"]
    assert agent["live"] is False
    assert agent["problems"] == ["no tick run by the worker yet"]

    mark(redis_client, hub, TICK, now)
    assert status(redis_client, hub, now=now)["agent"]["live"] is True
    assert status(redis_client, hub, now=now + 31)["agent"]["live"] is False  # the default limit: 30 s
    assert status(redis_client, hub, now=now + 31, dead_after=60)["agent"]["live"] is True


def test_a_bad_dead_after_is_refused(hub: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    live_agent(redis_client, hub, time.time())
    assert main(["status", "--dead-after", "soon"]) == 2
    assert "soon" in capsys.readouterr().err


def ctl_status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m agent_tasks.ctl status`` as a healthcheck runs it: a process of its own, judged by its exit code."""
    return subprocess.run(
        python_argv("-m", "agent_tasks.ctl", "status", *args),
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def exiting(env: dict[str, str], code: int) -> subprocess.CompletedProcess[str] | None:
    """The result of ``ctl status --dead-after 5s`` when it exits with ``code``, else None (to wait on)."""
    result = ctl_status(env, "--dead-after", "5s")
    return result if result.returncode == code else None


@pytest.mark.e2e
def test_status_of_a_running_agent_is_live_and_turns_dead_when_its_beat_and_then_its_worker_stop(
    process_env: dict[str, str], hub: str, tmp_path: Path, processes: list[Process]
) -> None:
    processes.extend(start_agent(process_env, tmp_path, listener=False))
    worker, beat = processes

    live = wait_for(
        lambda: exiting(process_env, 0),
        timeout=90,
        what="ctl status to report the started agent live",
    )
    assert live.stdout.splitlines()[1].startswith("agent: live (worker seen ")

    beat.stop()
    # The worker runs each tick a moment after beat sends it, so for that moment only beat's mark is stale: wait
    # until both are (the first "dead" report may name beat alone).
    both = re.compile(r"agent: DEAD \(no tick sent by beat for \d+ s; no tick run by the worker for \d+ s; ")

    def dead_with_both_stale() -> subprocess.CompletedProcess[str] | None:
        result = exiting(process_env, 1)
        return result if result is not None and both.match(result.stdout.splitlines()[1]) else None

    dead = wait_for(
        dead_with_both_stale, timeout=60, what="ctl status to report the agent dead once beat stopped, ticks too"
    )
    line = dead.stdout.splitlines()[1]
    assert "worker seen" in line and "last send 20" in line  # the worker is still up; the startup resyncs were sent

    worker.stop()
    wait_for(
        lambda: "no worker seen for" in ctl_status(process_env, "--dead-after", "5s").stdout,
        timeout=60,
        what="ctl status to say the worker is gone too",
    )


def test_status_of_an_unreachable_redis_is_neither_live_nor_dead(
    monkeypatch: pytest.MonkeyPatch, hub_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HUB_NAME", hub_name)
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{port}/0")

    assert main(["status"]) == EXIT_UNKNOWN
    assert "Redis cannot be read" in capsys.readouterr().err
