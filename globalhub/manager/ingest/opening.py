"""Everything about a consumed record that needs no database: its envelope opened, a hybrid bundle made rows.

Being pure work on the record's own bytes, it can run early (:class:`Lookahead`, while the server stores the
previous bundle), and any error in it belongs to the record: it becomes the record's dead letter.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from globalhub.manager.ingest.envelope import open_envelope
from globalhub.manager.ingest.hybrid import HybridWork, prepare_hybrid
from globalhub.manager.ingest.records import Record, Rejected, StatusEvent
from globalhub.manager.ingest.registry import HYBRID_TYPES

log = logging.getLogger(__name__)


@dataclass
class Opened:
    """A record with its envelope opened and, for a hybrid type, its rows prepared; or why either failed."""

    record: Record
    event: StatusEvent | None = None
    work: HybridWork | None = None
    rejected: Rejected | None = None  # the envelope (nothing else is known)
    bad_payload: Rejected | None = None  # a hybrid bundle of the wrong shape (told after the admission check)


def open_record(record: Record, topic_prefix: str, shared_topic: str = "") -> Opened:
    """Everything about a record that needs no database. Never raises for the record's content."""
    try:
        event = open_envelope(record, topic_prefix, shared_topic)
    except Rejected as rejected:
        return Opened(record, rejected=rejected)
    except Exception as error:  # checking an envelope needs no database: an error there belongs to the record
        log.exception("offset %s of %s: opening the envelope failed", record.offset, record.topic)
        return Opened(record, rejected=Rejected(f"the record could not be read: {type(error).__name__}: {error}"))
    kind = HYBRID_TYPES.get(event.type)
    if kind is None:
        return Opened(record, event)
    try:
        work = prepare_hybrid(kind, event)
    except Rejected as rejected:
        return Opened(record, event, bad_payload=rejected)
    except Exception as error:  # pure work on untrusted data: retrying cannot help, the record is bad
        log.exception(
            "hub=%s type=%s offset=%s: preparing the bundle failed", event.hub, event.type.short, record.offset
        )
        reason = f"the bundle could not be read: {type(error).__name__}: {error}"
        return Opened(record, event, bad_payload=Rejected(reason, hub=event.hub, event_type=event.type))
    event.parsed = None  # the rows carry it now
    return Opened(record, event, work)


class Lookahead:
    """The batch's records, opened in order; :meth:`prepare_next` opens the next one early.

    The hybrid writer calls it while the server takes in a COPY, so parsing the next bundle and storing this one
    overlap. At most one record is opened ahead, so memory stays at two parsed bundles.
    """

    def __init__(self, records: Sequence[Record], topic_prefix: str, shared_topic: str = "") -> None:
        self._records = records
        self._prefix = topic_prefix
        self._shared = shared_topic
        self._next = 0
        self._ready: Opened | None = None

    def __iter__(self) -> Iterator[Opened]:
        for index, record in enumerate(self._records):
            self._next = index + 1
            opened, self._ready = self._ready, None
            if opened is None or opened.record is not record:
                opened = open_record(record, self._prefix, self._shared)
            yield opened

    def prepare_next(self) -> None:
        if self._ready is None and self._next < len(self._records):
            self._ready = open_record(self._records[self._next], self._prefix, self._shared)
