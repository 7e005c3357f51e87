"""Dead letters: a record that can never be ingested is stored with the reason and its raw bytes, and the
partition goes on. Which database errors mean "this record's data" (never retried) and which mean "the database's
trouble" (the batch is retried) is decided here too.

Each dead letter also gets a **reason class**, one of the small fixed set :data:`REASON_CLASSES` (admin filter,
metric label; docs/protocol.md, "Dead letters"). The class comes from the :class:`Rejected` itself when its raiser
set one (a ``reason_class`` attribute), else from the fixed opening words each call site in ``ingest/`` writes
(:data:`_OPENINGS`): every way into :func:`dead_letter` is covered by a test, so a reworded call site is noticed.
"""

from __future__ import annotations

import logging

from django.db import DatabaseError, DataError, transaction

from globalhub.manager.ingest.records import Record, Rejected
from globalhub.manager.models import DeadLetter

log = logging.getLogger(__name__)

REASON_MAX_BYTES = 1000  # the reason is part of a unique index, whose entries have a size limit

MALFORMED = "malformed"  # not a CloudEvent, payload not JSON or empty, bad framing or digest extensions
VERSION = "version"  # extversion missing or malformed, or a malformed extdependencyversion
SOURCE = "source"  # not a hub status topic, or a source that is not the record's hub
UNKNOWN_TYPE = "unknown_type"  # an event type the manager does not know or does not ingest
TRUNCATED = "truncated"  # a framed resync or state whose frames did not all arrive
PAYLOAD = "payload"  # a well-formed event whose payload has the wrong shape or values the database refuses
OTHER = "other"  # anything else (a new call site not classified yet)

REASON_CLASSES: tuple[str, ...] = (MALFORMED, VERSION, SOURCE, UNKNOWN_TYPE, TRUNCATED, PAYLOAD, OTHER)
"""Every class a dead letter can have: fixed and small, since it is a metric label."""

# The opening words of each reason the ingest writes (envelope.py, opening.py, pipeline.py; the type parsers in
# complete.py, eventstreams.py and hybrid.py write theirs with the hub and type known, see classify_reason).
_OPENINGS: tuple[tuple[str, str], ...] = (
    ("not a CloudEvent", MALFORMED),
    ("not a valid CloudEvent", MALFORMED),
    ("payload is not valid JSON", MALFORMED),
    ("payload is empty", MALFORMED),
    ("bad resync framing", MALFORMED),
    ("the record could not be read", MALFORMED),
    ("heartbeat applied, its digests ignored", MALFORMED),
    ("missing extversion", VERSION),
    ("malformed extversion", VERSION),
    ("malformed extdependencyversion", VERSION),
    ("topic ", SOURCE),
    ("source ", SOURCE),
    ("unknown event type", UNKNOWN_TYPE),
    ("event type ", UNKNOWN_TYPE),
    ("truncated resync", TRUNCATED),
    ("truncated state", TRUNCATED),
    ("database rejected the data", PAYLOAD),
)


# SQLSTATE classes that mean "this data", deterministic for the record: cardinality (21, e.g. one upsert touching
# a row twice), data exception (22), integrity constraint (23). Anything else (connection, server shutting down,
# missing migration) is the database's trouble: the batch is retried, never skipped.
_DATA_PROBLEMS = ("21", "22", "23")


def refuses_the_data(error: DatabaseError) -> bool:
    if isinstance(error, DataError) and getattr(error.__cause__, "sqlstate", None) is None:
        return True  # refused by the driver before the server saw it (a NUL character in a text value)
    sqlstate = getattr(error.__cause__, "sqlstate", None) or ""
    return sqlstate[:2] in _DATA_PROBLEMS


def reason_class(rejected: Rejected) -> str:
    """The class of a rejection, one of :data:`REASON_CLASSES`: the raiser's own, else told from the call site."""
    explicit = getattr(rejected, "reason_class", None)
    if explicit in REASON_CLASSES:
        return str(explicit)
    return classify_reason(rejected.reason, known_event=bool(rejected.hub and rejected.event_type))


def classify_reason(reason: str, *, known_event: bool) -> str:
    """The class of a stored reason (also used to classify the dead letters stored before classes existed)."""
    for opening, kind in _OPENINGS:
        if reason.startswith(opening):
            return kind
    # Past the envelope (hub and type known), what is left is the type's own parser refusing the payload.
    return PAYLOAD if known_event else OTHER


def dead_letter(record: Record, rejected: Rejected) -> None:
    """Store the record as a dead letter, with the reason and its class; a redelivered one is stored once."""
    reason = storable_text(rejected.reason, max_bytes=REASON_MAX_BYTES)
    kind = reason_class(rejected)
    log.warning(
        "dead letter topic=%s partition=%s offset=%s hub=%s type=%s class=%s: %s",
        record.topic,
        record.partition,
        record.offset,
        rejected.hub or "-",
        rejected.event_type or "-",
        kind,
        reason,
    )
    letter = DeadLetter(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        reason=reason,
        reason_class=kind,
        hub_name=storable_text(rejected.hub, max_chars=200),
        event_type=storable_text(str(rejected.event_type), max_chars=255),
        key=record.key,
        headers=[[storable_text(name), storable_text(value)] for name, value in record.headers_json()],
        value=record.value,
    )
    try:
        with transaction.atomic():
            # the unique (position, reason) constraint is a witness, never an error
            DeadLetter.objects.bulk_create([letter], ignore_conflicts=True)
    except DatabaseError as error:
        if not refuses_the_data(error):
            raise
        # Whatever in the record still defeats the database, the raw bytes and the position are always storable.
        log.error("dead letter at offset %s stored without its text: %s", record.offset, error)
        letter.reason = storable_text(f"{reason} (headers dropped: {error})", max_bytes=REASON_MAX_BYTES)
        letter.headers, letter.hub_name, letter.event_type = [], "", ""
        DeadLetter.objects.bulk_create([letter], ignore_conflicts=True)


def storable_text(value: str, *, max_chars: int | None = None, max_bytes: int | None = None) -> str:
    """``value`` as text PostgreSQL stores: no NUL character, no lone surrogate, cut to the column's size.

    ``max_bytes`` bounds the UTF-8 length (the reason is part of a unique index, whose entries have a size limit).
    """
    text = value.replace("\x00", "\\x00").encode("utf-8", "replace").decode("utf-8")
    if max_chars is not None:
        text = text[:max_chars]
    if max_bytes is not None and len(text.encode("utf-8")) > max_bytes:
        text = text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")
    return text
