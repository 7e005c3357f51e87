"""The manager's metrics: ``/metrics`` of the web process and each status consumer's own endpoint, scraped and
parsed with prometheus_client's parser; every name and label is there, and each value moves when its event happens
(real PostgreSQL; the consumer process with real Kafka)."""

from __future__ import annotations

import logging
import random
import socket
import urllib.request
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import transaction
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from agent_tasks.simulate import make_cluster
from agent_tasks.types import tweak_cluster
from globalhub.manager import lifecycle
from globalhub.manager.ingest.pipeline import ingest_batch
from globalhub.manager.ingest.records import Record
from globalhub.manager.metrics import serve_consumer_metrics
from globalhub.manager.models import (
    ConsumedPosition,
    DeadLetter,
    Divergence,
    Hub,
    HubTypeStatus,
    ResyncRequest,
    ResyncTarget,
    TaskRun,
)
from globalhub.protocol.bundles import Frame, ObjectMetadata, dumps, frame_resync
from globalhub.protocol.events import EventType
from globalhub.protocol.kafka import STATUS_TOPIC_CONFIG, ConfirmedProducer, KafkaSettings, ensure_topics
from globalhub.protocol.objects import cluster_claim_id
from tests.helpers import Process, frame_message, record_of, start_consumer, status_message, wait_for

pytestmark = pytest.mark.django_db

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[dict[str, set[tuple[str, ...]]], Samples]:
    """The families (name -> the label names of its samples) and every sample's value, keyed by name and labels."""
    families: dict[str, set[tuple[str, ...]]] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        families.setdefault(family.name, set())
        for sample in family.samples:
            families[family.name].add(tuple(sorted(sample.labels)))
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return families, samples


def scrape(client: Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    return parse(response.content.decode())[1]


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when absent (a counter not incremented yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def hub_topic(hub: str) -> str:
    return settings.GLOBALHUB.status_topic_prefix + hub


def clusters(hub: str, count: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    return [tweak_cluster(make_cluster(hub, i, rng), hub) for i in range(count)]


def cluster_frames(hub: str, count: int) -> list[Frame]:
    """A first resync of ``count`` clusters, framed as an agent sends it."""
    objects = clusters(hub, count)
    pairs = [(ObjectMetadata(cluster_claim_id(o) or "", o["metadata"]["name"]), dumps(o)) for o in objects]
    return list(frame_resync(pairs))


def resync_records(hub: str, count: int, version: str) -> list[Record]:
    frames = cluster_frames(hub, count)
    return [record_of(frame_message(hub, f, version), hub_topic(hub), i) for i, f in enumerate(frames)]


# --- /metrics of the web process ------------------------------------------------------------------------------------


WEB_FAMILIES: Mapping[str, set[tuple[str, ...]]] = {
    "globalhub_hub_up": {("hub",)},
    "globalhub_hub_last_heartbeat_timestamp_seconds": {("hub",)},
    "globalhub_hub_timeout_seconds": {()},
    "globalhub_hub_stalled_types": {("hub",)},
    "globalhub_hub_type_stalled_since_timestamp_seconds": {("hub", "type")},
    "globalhub_consumer_lag_messages": {("hub", "topic")},
    "globalhub_consumer_lag_read_timestamp_seconds": {("hub", "topic")},
    "globalhub_ingest_rows": {("type",)},
    "globalhub_ingest_bundles": {("outcome", "type")},
    "globalhub_dead_letters": {("reason_class",)},
    "globalhub_divergences": {("type",)},
    "globalhub_resync_requests": {("status",)},
    "globalhub_probe_duration_seconds": {()},
    "globalhub_probe_last_success_timestamp_seconds": {()},
    "globalhub_task_runs": {("status", "task")},
}


def test_every_family_of_the_web_endpoint_is_exported_with_its_labels(client: Client) -> None:
    hub = f"hub-{uuid.uuid4().hex[:8]}"
    now = timezone.now()
    ingest_batch(resync_records(hub, 3, "1.1"), topic_prefix=settings.GLOBALHUB.status_topic_prefix)
    Hub.objects.filter(name=hub).update(last_heartbeat=now)
    HubTypeStatus.objects.update_or_create(
        hub_id=hub, event_type=EventType.LOCAL_COMPLIANCE.value, defaults={"stalled_since": now}
    )
    lifecycle.refresh_topic_ends(now=now, ends=lambda topics: {topic: {0: 5} for topic in topics})
    DeadLetter.objects.create(topic="t", partition=0, offset=1, reason="bad", reason_class="malformed")
    Divergence.objects.create(
        hub_id=hub,
        event_type=EventType.MANAGED_CLUSTER.value,
        seen_at=now,
        expected_count=3,
        found_count=2,
        expected_hash="0" * 16,
        found_hash="1" * 16,
    )
    probe_run(now, "succeeded", 0.5)

    response = client.get("/metrics")
    families, samples = parse(response.content.decode())
    for name, labels in WEB_FAMILIES.items():
        assert families.get(name) == labels, name
    assert set(families) == set(WEB_FAMILIES), "a family was added: list it here and in docs/architecture.md"
    statuses = {dict(labels)["status"] for name, labels in samples if name == "globalhub_resync_requests"}
    assert statuses == {"pending", "sent", "complete", "overdue", "failed"}
    assert value(samples, "globalhub_hub_timeout_seconds") == settings.GLOBALHUB.hub_timeout.total_seconds()


def test_an_ingested_batch_counts_rows_and_bundles_per_type_and_outcome(client: Client) -> None:
    hub = f"hub-{uuid.uuid4().hex[:8]}"
    prefix = settings.GLOBALHUB.status_topic_prefix
    before = scrape(client)

    first = resync_records(hub, 25, "5.9")
    ingest_batch(first, topic_prefix=prefix)
    after = scrape(client)
    assert value(after, "globalhub_ingest_rows_total", type="managedcluster") == (
        value(before, "globalhub_ingest_rows_total", type="managedcluster") + 25
    )
    stored = value(after, "globalhub_ingest_bundles_total", type="managedcluster", outcome="stored")
    assert stored == value(before, "globalhub_ingest_bundles_total", type="managedcluster", outcome="stored") + len(
        first
    )

    # A complete state behind a newer one is superseded; a cluster update older than its row is refused; garbage is
    # a dead letter. Each counts where it belongs.
    policy = str(uuid.uuid4())
    compliance = [{"policyId": policy, "compliantClusters": ["a"], "nonCompliantClusters": []}]
    stale = dict(clusters(hub, 1)[0], spec={"v": "old"})
    messages = [
        status_message(hub, EventType.LOCAL_COMPLIANCE, compliance, "5.9"),
        status_message(hub, EventType.LOCAL_COMPLIANCE, compliance, "5.8"),
        status_message(hub, EventType.MANAGED_CLUSTER, {"update": [stale]}, "4.10"),
    ]
    records = [record_of(message, hub_topic(hub), 100 + i) for i, message in enumerate(messages)]
    garbage = Record(topic=hub_topic(hub), partition=0, offset=103, key=b"k", value=b"\x00 not a cloudevent")
    ingest_batch([*records, garbage], topic_prefix=prefix)
    later = scrape(client)
    for kind, outcome in [
        ("policy.localcompliance", "stored"),
        ("policy.localcompliance", "superseded"),
        ("managedcluster", "refused"),
        ("unknown", "dead_letter"),
    ]:
        moved = value(later, "globalhub_ingest_bundles_total", type=kind, outcome=outcome) - value(
            after, "globalhub_ingest_bundles_total", type=kind, outcome=outcome
        )
        assert moved == 1.0, (kind, outcome)
    assert value(later, "globalhub_ingest_rows_total", type="managedcluster") == value(
        after, "globalhub_ingest_rows_total", type="managedcluster"
    )
    stored_letter = DeadLetter.objects.get(topic=hub_topic(hub), offset=103)
    assert value(later, "globalhub_dead_letters_total", reason_class=stored_letter.reason_class) == (
        value(after, "globalhub_dead_letters_total", reason_class=stored_letter.reason_class) + 1
    )


def test_a_rolled_back_batch_counts_nothing(client: Client) -> None:
    hub = f"hub-{uuid.uuid4().hex[:8]}"
    before = scrape(client)
    with pytest.raises(RuntimeError), transaction.atomic():
        ingest_batch(resync_records(hub, 5, "1.1"), topic_prefix=settings.GLOBALHUB.status_topic_prefix)
        raise RuntimeError("the batch's transaction rolls back")
    after = scrape(client)
    ingest_keys = [key for key in {*before, *after} if key[0].startswith("globalhub_ingest_")]
    assert ingest_keys == [] or all(before.get(key) == after.get(key) for key in ingest_keys)
    assert not Hub.objects.filter(name=hub).exists()


def test_the_topic_ends_refresh_stores_the_ends_and_the_lag_of_each_hub_topic_follows(client: Client) -> None:
    hub, quiet = f"hub-{uuid.uuid4().hex[:8]}", f"hub-{uuid.uuid4().hex[:8]}"
    now = timezone.now()
    Hub.objects.create(name=hub, last_heartbeat=now)
    Hub.objects.create(name=quiet, state=Hub.State.INACTIVE, last_heartbeat=now - timedelta(days=1))
    ConsumedPosition.objects.create(topic=hub_topic(hub), partition=0, next_offset=10)
    ConsumedPosition.objects.create(topic=hub_topic(hub), partition=1, next_offset=3)
    ConsumedPosition.objects.create(topic=hub_topic(quiet), partition=0, next_offset=7)
    ends = {hub_topic(hub): {0: 25, 1: 3}, hub_topic(quiet): {0: 7}}

    lifecycle.refresh_topic_ends(now=now, ends=lambda topics: {t: ends[t] for t in topics if t in ends})
    samples = scrape(client)
    assert value(samples, "globalhub_consumer_lag_messages", hub=hub, topic=hub_topic(hub)) == 15.0
    assert value(samples, "globalhub_consumer_lag_messages", hub=quiet, topic=hub_topic(quiet)) == 0.0
    read = value(samples, "globalhub_consumer_lag_read_timestamp_seconds", hub=hub, topic=hub_topic(hub))
    assert read == pytest.approx(now.timestamp())

    # The consumer catches up past the end last read: no lag (never negative) until the next refresh.
    ConsumedPosition.objects.filter(topic=hub_topic(hub), partition=0).update(next_offset=30)
    assert value(scrape(client), "globalhub_consumer_lag_messages", hub=hub, topic=hub_topic(hub)) == 0.0
    ends[hub_topic(hub)] = {0: 40, 1: 4}
    lifecycle.refresh_topic_ends(
        now=now + timedelta(minutes=1), ends=lambda topics: {t: ends[t] for t in topics if t in ends}
    )
    assert value(scrape(client), "globalhub_consumer_lag_messages", hub=hub, topic=hub_topic(hub)) == 11.0


def test_a_deleted_hub_leaves_no_lag_behind(client: Client) -> None:
    hub = f"hub-{uuid.uuid4().hex[:8]}"
    now = timezone.now()
    Hub.objects.create(name=hub, last_heartbeat=now)
    ConsumedPosition.objects.create(topic=hub_topic(hub), partition=0, next_offset=10)
    lifecycle.refresh_topic_ends(
        now=now, ends=lambda topics: {hub_topic(hub): {0: 5000}} if hub_topic(hub) in topics else {}
    )
    assert value(scrape(client), "globalhub_consumer_lag_messages", hub=hub, topic=hub_topic(hub)) == 4990.0

    lifecycle.delete_hub(hub, now, by="test")

    samples = scrape(client)
    assert ("globalhub_consumer_lag_messages", (("hub", hub), ("topic", hub_topic(hub)))) not in samples
    assert ConsumedPosition.objects.get(topic=hub_topic(hub)).next_offset == 10  # the position itself stays


def test_a_hub_never_heard_counts_as_silent_since_it_was_first_seen(client: Client) -> None:
    hub = f"hub-{uuid.uuid4().hex[:8]}"
    created = Hub.objects.create(name=hub).created_at
    assert value(scrape(client), "globalhub_hub_last_heartbeat_timestamp_seconds", hub=hub) == created.timestamp()


def test_hub_state_heartbeat_and_stalled_types_move(client: Client) -> None:
    hub = f"hub-{uuid.uuid4().hex[:8]}"
    beat = timezone.now().replace(microsecond=0)
    Hub.objects.create(name=hub, last_heartbeat=beat)
    before = scrape(client)
    assert value(before, "globalhub_hub_up", hub=hub) == 1.0
    assert value(before, "globalhub_hub_last_heartbeat_timestamp_seconds", hub=hub) == beat.timestamp()
    assert value(before, "globalhub_hub_stalled_types", hub=hub) == 0.0

    Hub.objects.filter(name=hub).update(state=Hub.State.INACTIVE)
    HubTypeStatus.objects.create(hub_id=hub, event_type=EventType.MANAGED_CLUSTER.value, stalled_since=beat)
    after = scrape(client)
    assert value(after, "globalhub_hub_up", hub=hub) == 0.0
    assert value(after, "globalhub_hub_stalled_types", hub=hub) == 1.0
    stalled = value(after, "globalhub_hub_type_stalled_since_timestamp_seconds", hub=hub, type="managedcluster")
    assert stalled == beat.timestamp()


def test_resync_requests_are_counted_by_the_admins_statuses(client: Client) -> None:
    live, gone = f"hub-{uuid.uuid4().hex[:8]}", f"hub-{uuid.uuid4().hex[:8]}"
    Hub.objects.create(name=live)
    Hub.objects.create(name=gone, state=Hub.State.INACTIVE)
    now = timezone.now()
    old = now - settings.GLOBALHUB.resync_overdue - timedelta(minutes=1)
    before = scrape(client)

    def request(hub: str, requested_at: datetime, **fields: Any) -> None:
        made = ResyncRequest.objects.create(
            subject=hub, types=[], reason="operator", requested_by="t", requested_at=requested_at, **fields
        )
        ResyncTarget.objects.create(request=made, hub_id=hub, completed_at=fields.get("completed_at"))

    request(live, now)  # pending
    request(live, now, sent_at=now)  # sent
    request(live, old, sent_at=old)  # overdue
    request(live, old, sent_at=old, completed_at=now)  # complete
    request(gone, now, sent_at=now)  # failed: nobody able to answer is left
    after = scrape(client)
    for status in ("pending", "sent", "overdue", "complete", "failed"):
        moved = value(after, "globalhub_resync_requests", status=status) - value(
            before, "globalhub_resync_requests", status=status
        )
        assert moved == 1.0, status


def probe_run(started: datetime, status: str, runtime: float | None, task: str = "manager.probe_hubs") -> TaskRun:
    return TaskRun.objects.create(
        task_id=uuid.uuid4().hex,
        task_name=task,
        status=status,
        started_at=started,
        finished_at=None if runtime is None else started + timedelta(seconds=runtime),
        runtime_seconds=runtime,
    )


def test_the_probe_duration_and_last_success_come_from_its_last_successful_run(client: Client) -> None:
    now = timezone.now().replace(microsecond=0)
    probe_run(now - timedelta(hours=3), "succeeded", 9.0)  # outside the task runs' hour
    probe_run(now - timedelta(minutes=4), "succeeded", 9.0)
    newest = probe_run(now - timedelta(minutes=2), "succeeded", 1.5)
    probe_run(now, "failed", 0.2)
    probe_run(now, "started", None, task="manager.send_resync_requests")

    samples = scrape(client)
    assert value(samples, "globalhub_probe_duration_seconds") == 1.5
    assert newest.finished_at is not None
    assert value(samples, "globalhub_probe_last_success_timestamp_seconds") == newest.finished_at.timestamp()
    assert value(samples, "globalhub_task_runs", task="manager.probe_hubs", status="succeeded") == 2.0
    assert value(samples, "globalhub_task_runs", task="manager.probe_hubs", status="failed") == 1.0
    assert value(samples, "globalhub_task_runs", task="manager.send_resync_requests", status="started") == 1.0


def test_divergences_are_counted_per_short_type(client: Client) -> None:
    hub = f"hub-{uuid.uuid4().hex[:8]}"
    Hub.objects.create(name=hub)
    before = scrape(client)
    Divergence.objects.create(
        hub_id=hub,
        event_type=EventType.MANAGED_CLUSTER.value,
        seen_at=timezone.now(),
        expected_count=3,
        found_count=2,
        expected_hash="0" * 16,
        found_hash="1" * 16,
    )
    after = scrape(client)
    assert value(after, "globalhub_divergences_total", type="managedcluster") == (
        value(before, "globalhub_divergences_total", type="managedcluster") + 1
    )


# --- each status consumer's own endpoint ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape_port(port: int) -> Samples | None:
    """The consumer endpoint's samples; None while it does not answer yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return parse(response.read().decode())[1]
    except OSError:
        return None


CONSUMER_FAMILIES = {
    "globalhub_ingest_batch_duration_seconds",
    "globalhub_consumer_records_read",
    "globalhub_consumer_batches",
    "globalhub_consumer_errors",
}


def test_a_port_in_use_is_warned_about_once_and_the_consumer_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    first = serve_consumer_metrics("127.0.0.1:0")
    assert first is not None
    try:
        port = first.server_address[1]
        families, samples = parse(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
        assert set(families) >= CONSUMER_FAMILIES
        assert {("globalhub_consumer_errors_total", (("kind", kind),)) for kind in ("database", "kafka")} <= set(
            samples
        )
        with caplog.at_level(logging.WARNING, logger="globalhub.manager.metrics"):
            assert serve_consumer_metrics(f"127.0.0.1:{port}") is None
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "GH_CONSUMER_METRICS_ADDR" in warnings[0].getMessage()
        assert serve_consumer_metrics("") is None
    finally:
        first.shutdown()
        first.server_close()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_consumer_process_serves_its_batch_histogram_which_grows_with_each_batch(
    kafka_settings: KafkaSettings,
    hub_name: str,
    process_env: dict[str, str],
    processes: list[Process],
    tmp_path: Path,
) -> None:
    port = free_port()
    topic = process_env["GH_STATUS_TOPIC_PREFIX"] + hub_name
    ensure_topics(kafka_settings, [topic], STATUS_TOPIC_CONFIG)
    processes.append(start_consumer({**process_env, "GH_CONSUMER_METRICS_ADDR": f"127.0.0.1:{port}"}, tmp_path))
    start = wait_for(lambda: scrape_port(port), timeout=60, what="the consumer's metrics endpoint")
    batches = value(start, "globalhub_ingest_batch_duration_seconds_count")

    frames = cluster_frames(hub_name, 30)
    producer = ConfirmedProducer(kafka_settings)
    producer.send(topic, [frame_message(hub_name, f, "1.1") for f in frames])
    producer.close()

    def grown() -> Samples | None:
        samples = scrape_port(port)
        if samples is None or value(samples, "globalhub_consumer_records_read_total") < len(frames):
            return None
        return samples if value(samples, "globalhub_ingest_batch_duration_seconds_count") > batches else None

    samples = wait_for(grown, timeout=60, what="a batch observed by the consumer's histogram")
    assert value(samples, "globalhub_consumer_batches_total") >= 1.0
    assert value(samples, "globalhub_ingest_batch_duration_seconds_bucket", le="+Inf") == value(
        samples, "globalhub_ingest_batch_duration_seconds_count"
    )
