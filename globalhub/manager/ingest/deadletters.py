"""Dead letters: a record that can never be ingested is stored with the reason and its raw bytes, and the
partition goes on. Which database errors mean "this record's data" (never retried) and which mean "the database's
trouble" (the batch is retried) is decided here too."""

from __future__ import annotations

import logging

from django.db import DatabaseError, DataError, transaction

from globalhub.manager.ingest.records import Record, Rejected
from globalhub.manager.models import DeadLetter

log = logging.getLogger(__name__)

REASON_MAX_BYTES = 1000  # the reason is part of a unique index, whose entries have a size limit


# SQLSTATE classes that mean "this data", deterministic for the record: cardinality (21, e.g. one upsert touching
# a row twice), data exception (22), integrity constraint (23). Anything else (connection, server shutting down,
# missing migration) is the database's trouble: the batch is retried, never skipped.
_DATA_PROBLEMS = ("21", "22", "23")


def refuses_the_data(error: DatabaseError) -> bool:
    if isinstance(error, DataError) and getattr(error.__cause__, "sqlstate", None) is None:
        return True  # refused by the driver before the server saw it (a NUL character in a text value)
    sqlstate = getattr(error.__cause__, "sqlstate", None) or ""
    return sqlstate[:2] in _DATA_PROBLEMS


def dead_letter(record: Record, rejected: Rejected) -> None:
    """Store the record as a dead letter, with the reason; a redelivered one is stored once."""
    reason = storable_text(rejected.reason, max_bytes=REASON_MAX_BYTES)
    log.warning(
        "dead letter topic=%s partition=%s offset=%s hub=%s type=%s: %s",
        record.topic,
        record.partition,
        record.offset,
        rejected.hub or "-",
        rejected.event_type or "-",
        reason,
    )
    letter = DeadLetter(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        reason=reason,
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
