"""The manager's Celery tasks: thin adapters over the lifecycle and the resync requests.

Every run is recorded as a ``TaskRun`` by the app's signals (``globalhub.celery``)."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import OperationalError
from django.utils import timezone

from globalhub.celery import app
from globalhub.manager import lifecycle, retention, taskruns
from globalhub.manager.models import ResyncRequest, TaskRun
from globalhub.manager.resync_requests import SEND_TASK, dispatch_pending, request_resyncs
from globalhub.protocol.kafka import ConfirmedProducer, KafkaSettings, KafkaUnavailable

log = logging.getLogger(__name__)


class _Producer:
    """One confirmed producer per worker process, created on first use (after the pool's fork)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._producer: ConfirmedProducer | None = None

    def get(self) -> ConfirmedProducer:
        with self._lock:
            if self._producer is None:
                self._producer = ConfirmedProducer(KafkaSettings.from_env(), **{"message.timeout.ms": 10_000})
            return self._producer


_producer = _Producer()


@app.task(
    name="manager.probe_hubs",
    autoretry_for=(OperationalError,),
    retry_backoff=2,
    retry_backoff_max=30,
    max_retries=10,
    ignore_result=True,
)
def probe_hubs() -> dict[str, list[str]]:
    """Every 2 minutes: silent hubs become inactive (their data cleaned), returning ones active and resynced.

    A quiet hub whose topic is not read to its end is not judged, nor is anyone while Kafka does not answer and for
    a grace after it does again (see ``lifecycle.probe``). Then status topics with the producer's timestamps (made by
    upstream's agents or operator) are switched to the broker's (``lifecycle.repair_status_topics``)."""
    result = lifecycle.probe()
    if result.inactivated or result.reactivated:
        log.info("probe: inactivated %s, reactivated %s", result.inactivated, result.reactivated)
    try:
        lifecycle.repair_status_topics()
    except KafkaUnavailable as error:
        log.info("status topics' timestamps not checked: %s", error)
    return {
        "inactivated": result.inactivated,
        "reactivated": result.reactivated,
        "not_judged": sorted(result.not_judged),
    }


@app.task(name="manager.refresh_topic_ends", ignore_result=True)
def refresh_topic_ends() -> dict[str, object]:
    """Every ``GH_TOPIC_ENDS_INTERVAL`` (1 min): read the end of every hub's status topic and store it with the
    positions, for the consumer lag of ``/metrics`` and the admin (``lifecycle.refresh_topic_ends``).

    Its own task, not the probe's: for 10,000 hubs it asks Kafka for 10,000 topics and updates 10,000 positions.
    When Kafka cannot be asked, the stored ends stay with the time they were read (the lag's read timestamp ages)."""
    try:
        updated = lifecycle.refresh_topic_ends()
    except KafkaUnavailable as error:
        log.info("topics' ends not refreshed: %s", error)
        return {"updated": 0, "kafka_unreachable": True}
    return {"updated": updated, "kafka_unreachable": False}


@app.task(name=SEND_TASK, ignore_result=True, quiet_when_idle=True)
def send_resync_requests() -> int:
    """Send pending resync requests to the hubs (after each request's commit, and every few seconds).

    Quiet when idle (``globalhub.celery``): a run that sent nothing is neither recorded as a task run nor logged at
    INFO, as it happens every 5 seconds."""
    return dispatch_pending(_producer.get(), settings.GLOBALHUB.spec_topic)


@app.task(name="manager.prune_events", ignore_result=True)
def prune_events() -> dict[str, int]:
    """Delete stored events older than ``GH_EVENT_RETENTION`` (the event streams' retention), and recorded task
    runs older than ``GH_TASK_RUN_RETENTION``: the hourly retention job."""
    now = timezone.now()
    deleted = retention.prune_events(now, settings.GLOBALHUB.event_retention)
    deleted[TaskRun._meta.db_table] = taskruns.prune(now, settings.GLOBALHUB.task_run_retention)
    return deleted


@app.task(name="manager.periodic_resync", ignore_result=True)
def periodic_resync(types: list[str], hubs: list[str] | None = None) -> list[int]:
    """A schedule's resync: the given types of the given hubs (default: every hub, as one broadcast).

    A hub of the list the manager no longer knows (deleted since the schedule was written) is left out with a
    warning: it never holds back the other hubs' resyncs.
    """
    requests = request_resyncs(hubs, types, ResyncRequest.Reason.PERIODIC, "schedule", skip_unknown=True)
    return [r.pk for r in requests]
