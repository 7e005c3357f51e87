"""The manager's Prometheus metrics: which process serves which, and every name.

**The web process, at ``/metrics``** (:class:`ManagerCollector`): read from PostgreSQL at scrape time. What every
process of the manager writes ends up there, so one endpoint describes them all, and a restart loses nothing:

* per hub: ``globalhub_hub_up``, ``globalhub_hub_last_heartbeat_timestamp_seconds`` (the heartbeat age is
  ``time() -`` it; ``globalhub_hub_timeout_seconds`` is the age at which a hub is judged silent),
  ``globalhub_hub_stalled_types`` and, per stalled type, ``globalhub_hub_type_stalled_since_timestamp_seconds``;
* per hub topic: ``globalhub_consumer_lag_messages`` (the topic's end as ``refresh topic ends`` last read it, less
  the stored position; it runs every ``GH_TOPIC_ENDS_INTERVAL``, see ``lifecycle.refresh_topic_ends``) and when
  that end was read;
* the ingest counters kept in each batch's transaction (``IngestTotal``, see ``ingest/totals.py``):
  ``globalhub_ingest_rows_total{type}``, ``globalhub_ingest_bundles_total{type,outcome}``; stored dead letters per
  reason class ``globalhub_dead_letters_total{reason_class}``; divergences found by the anti-entropy digests
  ``globalhub_divergences_total{type}``;
* ``globalhub_resync_requests{status}`` (the admin's statuses, ``resync_requests.count_by_status``);
* the hub probe as its task runs recorded it (``TaskRun``): ``globalhub_probe_duration_seconds``,
  ``globalhub_probe_last_success_timestamp_seconds``; and ``globalhub_task_runs{task,status}`` of the last hour.

Only grouped counts and one row per hub or hub topic. Unauthenticated, as scrape targets usually are: it shows hub
names and counts, nothing of their data. Counters read from rows are ``_total`` counters: they survive restarts
(a row deleted with its hub reads to Prometheus as a counter reset).

**Each status consumer, on ``GH_CONSUMER_METRICS_ADDR``** (default ``127.0.0.1:9108``; "" serves none;
:func:`serve_consumer_metrics`): what only that process knows, lost when it ends (Prometheus adds them up across
consumers): ``globalhub_ingest_batch_duration_seconds`` (histogram of committed batches),
``globalhub_consumer_records_read_total``, ``globalhub_consumer_batches_total``, ``globalhub_consumer_errors_total
{kind}`` (``database``: a batch rolled back and retried; ``kafka``: a consumer error reported by the client), and
the ``process_*`` metrics of the process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from wsgiref.simple_server import WSGIServer

from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from globalhub.manager.conf import metrics_address
from globalhub.manager.ingest.deadletters import REASON_CLASSES
from globalhub.manager.ingest.totals import type_label
from globalhub.manager.models import (
    ConsumedPosition,
    DeadLetter,
    Divergence,
    Hub,
    HubTypeStatus,
    IngestTotal,
    TaskRun,
)
from globalhub.manager.resync_requests import count_by_status

log = logging.getLogger(__name__)

PROBE_TASK = "manager.probe_hubs"
TASK_RUNS_WINDOW = timedelta(hours=1)


def _seconds(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


class ManagerCollector(Collector):
    """Every metric of ``/metrics``, read from the database at each scrape (a few grouped queries)."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        yield from self._hubs()
        yield from self._lag()
        yield from self._ingest()
        yield self._dead_letters()
        yield self._divergences()
        yield self._requests(now)
        yield from self._probe()
        yield self._task_runs(now)

    def _hubs(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("globalhub_hub_up", "1 while the hub is active, 0 once judged inactive", labels=["hub"])
        heartbeat = GaugeMetricFamily(
            "globalhub_hub_last_heartbeat_timestamp_seconds",
            "When the hub's last heartbeat reached the manager's side (the broker's time), or when the hub was first "
            "seen if it never sent one; its age is time() minus it",
            labels=["hub"],
        )
        stalled = GaugeMetricFamily("globalhub_hub_stalled_types", "Types of the hub marked stalled", labels=["hub"])
        since = GaugeMetricFamily(
            "globalhub_hub_type_stalled_since_timestamp_seconds",
            "Since when a type of the hub is stalled (its bundles keep being refused); only stalled types",
            labels=["hub", "type"],
        )
        stalls: dict[str, int] = {}
        rows = HubTypeStatus.objects.filter(stalled_since__isnull=False).values_list(
            "hub_id", "event_type", "stalled_since"
        )
        for hub, event_type, moment in rows.order_by("hub_id", "event_type"):
            stalls[hub] = stalls.get(hub, 0) + 1
            since.add_metric([hub, type_label(event_type)], _seconds(moment) or 0.0)
        hubs = Hub.objects.values_list("name", "state", "last_heartbeat", "created_at").order_by("name")
        for name, state, last, created in hubs:
            up.add_metric([name], 1.0 if state == Hub.State.ACTIVE else 0.0)
            seen = _seconds(last or created)  # never heard: silent since first seen, as the probe judges it
            if seen is not None:
                heartbeat.add_metric([name], seen)
            stalled.add_metric([name], float(stalls.get(name, 0)))
        timeout = GaugeMetricFamily(
            "globalhub_hub_timeout_seconds",
            "A hub with no heartbeat read for this long is silent (GH_HUB_TIMEOUT; the probe then judges it inactive)",
            value=settings.GLOBALHUB.hub_timeout.total_seconds(),
        )
        yield from (up, heartbeat, timeout, stalled, since)

    def _lag(self) -> Iterator[Metric]:
        """Per hub topic: the messages its partitions held when their ends were last read that are not ingested
        yet (never below 0: the consumer may have passed that end since), and when the oldest end was read."""
        conf = settings.GLOBALHUB
        lag = GaugeMetricFamily(
            "globalhub_consumer_lag_messages",
            "Messages of the hub's status topic not ingested yet, as of the topic's end last read (refresh topic ends) "
            "(hub is empty for the shared status topic)",
            labels=["hub", "topic"],
        )
        read = GaugeMetricFamily(
            "globalhub_consumer_lag_read_timestamp_seconds",
            "When the topic's end behind globalhub_consumer_lag_messages was read (its oldest partition)",
            labels=["hub", "topic"],
        )
        behind: dict[str, int] = {}
        oldest: dict[str, datetime] = {}
        positions = ConsumedPosition.objects.filter(end_offset__isnull=False).values_list(
            "topic", "next_offset", "end_offset", "end_read_at"
        )
        for topic, next_offset, end_offset, read_at in positions.order_by("topic", "partition"):
            hub = _hub_of_topic(topic, conf.status_topic_prefix, conf.shared_status_topic)
            if hub is None or end_offset is None:
                continue  # a topic no longer read (another prefix): not a hub topic now
            behind[topic] = behind.get(topic, 0) + max(0, end_offset - next_offset)
            if read_at is not None and (topic not in oldest or read_at < oldest[topic]):
                oldest[topic] = read_at
        for topic, waiting in behind.items():
            labels = [_hub_of_topic(topic, conf.status_topic_prefix, conf.shared_status_topic) or "", topic]
            lag.add_metric(labels, float(waiting))
            if topic in oldest:
                read.add_metric(labels, oldest[topic].timestamp())
        yield from (lag, read)

    def _ingest(self) -> Iterator[Metric]:
        rows = CounterMetricFamily(
            "globalhub_ingest_rows",
            "Objects the status consumer wrote, by event type (short name)",
            labels=["type"],
        )
        bundles = CounterMetricFamily(
            "globalhub_ingest_bundles",
            "Bundles (status records) the consumer ingested, by event type and outcome: stored, superseded (version "
            "not admitted, or replaced in its batch), refused (every object older than the row's), dead_letter, "
            "inactive (hub inactive), staged (a frame awaiting the rest), not_stored (counted only)",
            labels=["type", "outcome"],
        )
        written: dict[str, int] = {}
        for event_type, outcome, n, objects in IngestTotal.objects.values_list(
            "event_type", "outcome", "bundles", "rows"
        ).order_by("event_type", "outcome"):
            bundles.add_metric([event_type, outcome], float(n))
            written[event_type] = written.get(event_type, 0) + objects
        for event_type, objects in written.items():
            rows.add_metric([event_type], float(objects))
        yield from (rows, bundles)

    def _dead_letters(self) -> Metric:
        family = CounterMetricFamily(
            "globalhub_dead_letters", "Stored dead letters by reason class", labels=["reason_class"]
        )
        counts = dict(DeadLetter.objects.values_list("reason_class").annotate(n=Count("id")).order_by())
        for reason_class in sorted({*REASON_CLASSES, *counts}):
            family.add_metric([reason_class], float(counts.get(reason_class, 0)))
        return family

    def _divergences(self) -> Metric:
        family = CounterMetricFamily(
            "globalhub_divergences", "Divergences the anti-entropy digests found, by event type", labels=["type"]
        )
        counts: dict[str, int] = {}
        for event_type, n in Divergence.objects.values_list("event_type").annotate(n=Count("id")).order_by():
            label = type_label(event_type)
            counts[label] = counts.get(label, 0) + n
        for label, n in sorted(counts.items()):
            family.add_metric([label], float(n))
        return family

    def _requests(self, now: datetime) -> Metric:
        family = GaugeMetricFamily(
            "globalhub_resync_requests",
            "Resync requests by status: pending, sent, complete, overdue (not complete past GH_RESYNC_OVERDUE), "
            "failed (nobody able to answer is left, or never sent)",
            labels=["status"],
        )
        for status, n in count_by_status(now, settings.GLOBALHUB.resync_overdue).items():
            family.add_metric([status.value], float(n))
        return family

    def _probe(self) -> Iterator[Metric]:
        duration = GaugeMetricFamily(
            "globalhub_probe_duration_seconds", "How long the last successful hub probe (manager.probe_hubs) ran"
        )
        success = GaugeMetricFamily(
            "globalhub_probe_last_success_timestamp_seconds", "When the last successful hub probe ended"
        )
        last = (
            TaskRun.objects.filter(task_name=PROBE_TASK, status=TaskRun.Status.SUCCEEDED)
            .order_by("-started_at")
            .values_list("started_at", "finished_at", "runtime_seconds")
            .first()
        )
        if last is not None:
            started, finished, runtime = last
            if runtime is not None:
                duration.add_metric([], runtime)
            ended = finished or (started + timedelta(seconds=runtime or 0))
            success.add_metric([], ended.timestamp())
        yield from (duration, success)

    def _task_runs(self, now: datetime) -> Metric:
        family = GaugeMetricFamily(
            "globalhub_task_runs",
            "Manager Celery task runs started in the last hour, by task and status (as recorded)",
            labels=["task", "status"],
        )
        recent = TaskRun.objects.filter(status__in=TaskRun.Status.values, started_at__gte=now - TASK_RUNS_WINDOW)
        for task, status, n in (
            recent.values_list("task_name", "status").annotate(n=Count("id")).order_by("task_name", "status")
        ):
            family.add_metric([task, status], float(n))
        return family


def _hub_of_topic(topic: str, prefix: str, shared: str) -> str | None:
    """The hub whose status ``topic`` is ("" for the shared status topic); None when it is not a status topic."""
    if shared and topic == shared:
        return ""
    if topic.startswith(prefix) and len(topic) > len(prefix):
        return topic[len(prefix) :]
    return None


_REGISTRY = CollectorRegistry(auto_describe=False)
_REGISTRY.register(ManagerCollector())


def metrics_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(_REGISTRY), content_type=CONTENT_TYPE_LATEST)


# --- each status consumer's own metrics -----------------------------------------------------------------------------

CONSUMER_REGISTRY = CollectorRegistry()
"""What a status consumer process serves (:func:`serve_consumer_metrics`)."""

ProcessCollector(registry=CONSUMER_REGISTRY)
BATCH_DURATION = Histogram(
    "globalhub_ingest_batch_duration_seconds",
    "How long one batch took to ingest and commit, in the status consumer (batches rolled back are not observed)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
    registry=CONSUMER_REGISTRY,
)
RECORDS_READ = Counter(
    "globalhub_consumer_records_read",
    "Records the status consumer read from Kafka into batches (a retried batch's again)",
    registry=CONSUMER_REGISTRY,
)
BATCHES = Counter(
    "globalhub_consumer_batches", "Batches the status consumer ingested and committed", registry=CONSUMER_REGISTRY
)
ERRORS = Counter(
    "globalhub_consumer_errors",
    "Errors of the status consumer: database (a batch rolled back, retried after a backoff), kafka (a consumer "
    "error the client reported)",
    labelnames=["kind"],
    registry=CONSUMER_REGISTRY,
)
for _kind in ("database", "kafka"):
    ERRORS.labels(_kind)  # present at zero from the start, so increase() sees the first one


def serve_consumer_metrics(address: str) -> WSGIServer | None:
    """Serve :data:`CONSUMER_REGISTRY` over HTTP on ``address`` (``host:port``; port 0: any free one) from a daemon
    thread; the server (``server_address`` says where it listens; ``shutdown()`` stops it), or None when not served.

    "" serves nothing. Several consumers on one host would compete for one port: the ones that do not get it log a
    warning and go on without serving (the ingest matters more than its metrics).
    """
    where = metrics_address(address)
    if where is None:
        return None
    try:
        server, _ = start_http_server(where[1], where[0], registry=CONSUMER_REGISTRY)
    except OSError as error:
        log.warning(
            "consumer metrics not served on %s (%s): set GH_CONSUMER_METRICS_ADDR to a free port", address, error
        )
        return None
    log.info("consumer metrics served on %s port %d (/metrics)", where[0], server.server_address[1])
    return server
