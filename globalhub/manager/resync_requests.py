"""Resync requests as records: created with whatever caused them, sent by an outbox, completed by the answers.

* :func:`create_request` writes the request (and one target per hub) in the caller's transaction, so a state change
  and the request it implies commit together or not at all. After the commit a Celery task is asked to send it.
* :func:`dispatch_pending` sends unsent requests to ``gh-spec`` (confirmed by Kafka) and stamps ``sent_at``.
  Rows are claimed with ``FOR UPDATE SKIP LOCKED``, so several workers never send one request twice; a send that
  fails stays pending and is retried by the next dispatch (beat runs one every few seconds).
* :func:`complete_answered` marks a target complete once its hub delivered a full state of every requested type
  after the request was sent, and the request once every target is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from globalhub.manager.models import Hub, HubTypeStatus, ResyncRequest, ResyncTarget
from globalhub.protocol.codec import OutgoingMessage
from globalhub.protocol.events import BROADCAST, RESYNC_TYPES, EventType
from globalhub.protocol.kafka import ConfirmedProducer, DeliveryFailed
from globalhub.protocol.requests import resync_request

log = logging.getLogger(__name__)

DEFAULT_TYPES: tuple[EventType, ...] = RESYNC_TYPES


def full_types(types: Iterable[str | EventType] | None) -> list[str]:
    """Normalise requested types (short or full) to full type strings, in the manager's order; default: all four."""
    wanted = [EventType.from_any(str(t)) for t in (types or DEFAULT_TYPES)]
    unknown = [t for t in wanted if t not in RESYNC_TYPES]
    if unknown:
        raise ValueError(
            f"{', '.join(t.short for t in unknown)} cannot be resynced; choose from "
            f"{', '.join(t.short for t in RESYNC_TYPES)}"
        )
    return [t.value for t in RESYNC_TYPES if t in wanted]


def create_request(
    hub: str | None,
    types: Iterable[str | EventType] | None,
    reason: ResyncRequest.Reason,
    requested_by: str,
    now: datetime | None = None,
) -> ResyncRequest:
    """Record a resync of one hub, or of every hub (``hub=None``: a broadcast whose targets are the active hubs).

    Runs in the caller's transaction; the request is sent after that commits.
    """
    moment = now or timezone.now()
    requested = full_types(types)
    with transaction.atomic():
        if hub is None:
            subject = BROADCAST
            targets = list(Hub.objects.filter(state=Hub.State.ACTIVE).values_list("name", flat=True))
        else:
            if not Hub.objects.filter(name=hub).exists():
                raise ValueError(f"unknown hub {hub!r}")
            subject, targets = hub, [hub]
        request = ResyncRequest.objects.create(
            subject=subject, types=requested, reason=reason, requested_by=requested_by, requested_at=moment
        )
        ResyncTarget.objects.bulk_create([ResyncTarget(request=request, hub_id=name) for name in targets])
        transaction.on_commit(_ask_for_dispatch)
    log.info(
        "resync request #%s (%s, by %s) for %s: %s",
        request.pk,
        reason,
        requested_by,
        subject,
        ", ".join(EventType(t).short for t in requested),
    )
    return request


def _ask_for_dispatch() -> None:
    """After the commit: ask a worker to send now (the periodic dispatch catches it anyway if this fails)."""
    from globalhub.manager.tasks import send_resync_requests

    try:
        send_resync_requests.delay()
    except Exception as error:  # the broker being down must not fail the caller; beat's dispatch will send it
        log.warning("could not queue the resync dispatch (%s); the periodic dispatch will send it", error)


def dispatch_pending(producer: ConfirmedProducer, spec_topic: str, limit: int = 100) -> int:
    """Send unsent requests in order; returns how many were sent. Stops at the first failure (order is kept)."""
    sent = 0
    with transaction.atomic():
        pending = list(
            ResyncRequest.objects.select_for_update(skip_locked=True)
            .filter(sent_at__isnull=True)
            .order_by("id")[:limit]
        )
        for request in pending:
            message: OutgoingMessage = resync_request(request.subject, request.types)
            try:
                producer.send(spec_topic, [message])
            except DeliveryFailed as error:
                request.send_attempts += 1
                request.last_send_error = str(error)[:1000]
                request.save(update_fields=["send_attempts", "last_send_error"])
                log.error("resync request #%s not sent (attempt %d): %s", request.pk, request.send_attempts, error)
                break
            request.sent_at = timezone.now()
            request.send_attempts += 1
            request.last_send_error = ""
            request.save(update_fields=["sent_at", "send_attempts", "last_send_error"])
            sent += 1
    return sent


def complete_answered(hubs: Iterable[str], now: datetime | None = None) -> int:
    """Mark targets of these hubs whose every requested type arrived whole after the request was sent."""
    names = sorted(set(hubs))
    if not names:
        return 0
    moment = now or timezone.now()
    targets = ResyncTarget._meta.db_table
    requests = ResyncRequest._meta.db_table
    status = HubTypeStatus._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {targets} AS t SET completed_at = %s
            FROM {requests} AS r
            WHERE t.request_id = r.id AND t.hub_id = ANY(%s) AND t.completed_at IS NULL AND r.sent_at IS NOT NULL
              AND NOT EXISTS (
                SELECT 1 FROM jsonb_array_elements_text(r.types) AS wanted(type)
                WHERE NOT EXISTS (
                    SELECT 1 FROM {status} AS s
                    WHERE s.hub_id = t.hub_id AND s.event_type = wanted.type AND s.last_full_state_at >= r.sent_at))
            RETURNING t.request_id
            """,
            [moment, names],
        )
        touched = sorted({row[0] for row in cursor.fetchall()})
        if touched:
            cursor.execute(
                f"""
                UPDATE {requests} AS r SET completed_at = %s
                WHERE r.id = ANY(%s) AND r.completed_at IS NULL
                  AND NOT EXISTS (SELECT 1 FROM {targets} t WHERE t.request_id = r.id AND t.completed_at IS NULL)
                """,
                [moment, touched],
            )
    return len(touched)
