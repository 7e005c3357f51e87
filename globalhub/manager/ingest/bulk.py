"""Set-based writes for hybrid object tables: COPY for new objects, a staged upsert for changed ones.

No row-by-row ORM saves on the hot path. Every statement is scoped by hub, so one hub can never touch another
hub's rows. Every write carries the writing bundle's :class:`~globalhub.manager.ingest.admission.Stamp`: a row is
written only by a newer stamp than the one it has, unless the write is authoritative (``force``, a full state that
answers a request or follows an agent start), and it keeps the stamp of what wrote it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connection, transaction
from psycopg import Copy
from psycopg.copy import LibpqWriter

from globalhub.manager.ingest.admission import Stamp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectTable:
    """Where one hybrid type's objects live and how its columns are named."""

    table: str
    id_column: str
    name_column: str
    hub_column: str = "leaf_hub_name"
    # SQL for a row's namespace (None: the objects have none, as ManagedClusters). A delete without an id matches
    # name and namespace, as upstream's does: ``ns-a/p`` never takes ``ns-b/p`` with it.
    namespace_sql: str | None = None

    @property
    def stage(self) -> str:
        return f"_stage_{self.table}"


Meanwhile = Callable[[], None]
"""Work for the client while the server takes in a COPY. It must not use the database connection, and a second
call must do nothing (it may be offered more than one COPY)."""


@contextmanager
def copy_into(
    cursor: Any, statement: str, meanwhile: Meanwhile | None = None, *, flush_each_write: bool = False
) -> Iterator[Copy]:
    """psycopg's ``COPY … FROM STDIN`` on a Django cursor, its errors translated into Django's like any statement's.

    So a row the database refuses (a value too long, a NUL character) is a ``DataError`` the ingest dead-letters,
    not a driver exception that would stop the partition. ``meanwhile()`` runs once the rows are written: a
    bundle's rows (under a megabyte) fit in the sockets' buffers, so the server parses and stores them while the
    client works on, and the two cores work at once. (psycopg's queued writer did worse: its thread waits for the
    interpreter lock to send each chunk, so the server got the data only as fast as the client's work let go.)
    """
    raw = cursor.cursor
    # With work to overlap, every block is flushed to the socket as it is written, so none waits in libpq's buffer
    # while ``meanwhile`` runs (psycopg otherwise flushes once a megabyte has been written).
    writer = LibpqWriter(raw, flush_threshold=0) if meanwhile is not None or flush_each_write else None
    with connection.wrap_database_errors, raw.copy(statement, writer=writer) as copy:
        yield copy
        if meanwhile is not None:
            meanwhile()


def stage_table(cursor: Any, name: str, columns: str, uncompressed: str | None = None) -> None:
    """An empty session-local staging table (created once per connection, emptied at every use and commit).

    A staged value is read once and thrown away, so compressing it (PostgreSQL's default for large values) is pure
    waste: ``uncompressed`` names a column stored as is. On this machine that halves a 10,000-cluster upsert.
    """
    cursor.execute("SELECT to_regclass(%s)", [f"pg_temp.{name}"])
    if cursor.fetchone()[0] is None:
        cursor.execute(f"CREATE TEMP TABLE {name} ({columns}) ON COMMIT DELETE ROWS")
        if uncompressed:
            cursor.execute(f"ALTER TABLE {name} ALTER COLUMN {uncompressed} SET STORAGE EXTERNAL")
    else:
        cursor.execute(f"DELETE FROM {name}")  # small, and cheaper than TRUNCATE's lock and file work each frame


@dataclass(frozen=True, slots=True)
class ObjectRow:
    """One object, ready for COPY: made while the bundle is prepared, which overlaps the previous bundle's COPY."""

    object_id: str  # canonical UUID text
    name: str
    digest: bytes  # of the payload: equal digests, equal objects
    fields: bytes  # id, name, payload and digest in COPY's text format, tab-separated

    @classmethod
    def of(cls, object_id: str, name: str, payload: bytes) -> ObjectRow:
        digest = payload_digest(payload)
        fields = (object_id.encode("ascii"), copy_text(name), copy_text(payload), _bytea_text(digest))
        return cls(object_id, name, digest, b"\t".join(fields))


def payload_digest(payload: bytes) -> bytes:
    """128 bits of SHA-256: no accidental collision, and the fastest hashlib digest here (CPU instructions)."""
    return hashlib.sha256(payload).digest()[:16]


_COPY_ESCAPES = ((b"\\", b"\\\\"), (b"\n", b"\\n"), (b"\r", b"\\r"), (b"\t", b"\\t"))


def copy_text(value: str | bytes) -> bytes:
    """A value in COPY's text format: backslash, newline, carriage return and tab escaped."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    for raw, escaped in _COPY_ESCAPES:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def _bytea_text(value: bytes) -> bytes:
    return b"\\\\x" + value.hex().encode("ascii")  # \\x…: bytea's hex input, its backslash escaped for COPY


@dataclass
class FirstSight:
    """A hub that had no rows of a type when the transaction began: an id not written since is new, unasked.

    ``written`` holds every id offered for writing since, whether or not the write was kept (a rolled-back
    savepoint): those are looked up in the table, so the set can only err towards asking.
    """

    written: set[str] = field(default_factory=set)


def hubs_without_rows(spec: ObjectTable, hubs: Sequence[str]) -> set[str]:
    """Those of ``hubs`` with no rows in ``spec``'s table (not even soft-deleted ones): one statement for all."""
    if not hubs:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT h FROM unnest(%s::text[]) AS h "
            f"WHERE NOT EXISTS (SELECT 1 FROM {spec.table} WHERE {spec.hub_column} = h)",
            [list(hubs)],
        )
        return {hub for (hub,) in cursor.fetchall()}


@dataclass
class Upserted:
    written: int = 0  # rows inserted or updated
    unchanged: int = 0  # rows that already held this content (stamped, and marked if a resync listed them)
    stale: int = 0  # rows left alone: they hold newer content than this bundle


def upsert_objects(
    spec: ObjectTable,
    hub: str,
    rows: Sequence[ObjectRow],
    now: datetime,
    mark: str,
    stamp: Stamp,
    *,
    force: bool = False,
    meanwhile: Meanwhile | None = None,
    seen: FirstSight | None = None,
) -> Upserted:
    """Make ``rows`` the hub's live objects, clearing ``deleted_at``; a non-empty ``mark`` sets ``resync_mark``.

    A row whose stamp is as new as ``stamp`` or newer is left alone, unless ``force``. Most of a full resync is
    objects the manager already has, unchanged: those are only stamped and marked. (Should the hub be made inactive
    by the probe between the look-up and the marking, its rows stay soft-deleted: as if this batch had come first;
    the resync that follows its reactivation brings them back.) Objects the hub never reported go straight in with
    COPY; the rest (changed, or soft-deleted) are staged and upserted. Only one transaction writes a hub's objects
    of one type at a time (the partition's advisory lock), so what is read first stays true; should anything else
    have inserted an object in between, the upsert takes it.

    The last row wins when an id appears twice. ``meanwhile`` runs during the first COPY (or at the end if there is
    none). ``seen`` spares the look-up of ids that cannot be in the table yet.
    """
    result = Upserted()
    latest = {row.object_id: row for row in rows}
    if not latest:
        return result
    with connection.cursor() as cursor:
        known = _known_rows(cursor, spec, hub, _to_look_up(latest, seen))
        if not force:
            stale = [
                object_id for object_id in latest if object_id in known and not stamp.newer_than(known[object_id][1])
            ]
            for object_id in stale:
                del latest[object_id]
            result.stale = len(stale)
        new = [row for object_id, row in latest.items() if object_id not in known]
        changed = [row for object_id, row in latest.items() if object_id in known and known[object_id][0] != row.digest]
        unchanged = [
            object_id for object_id, row in latest.items() if object_id in known and known[object_id][0] == row.digest
        ]
        write = _Write(cursor, spec, hub, now, mark, stamp, meanwhile)
        if new and not _insert_new(write, new):
            changed += new
        if changed:
            _upsert_staged(write, changed, force=force)
        _restamp(write, unchanged)
    if meanwhile is not None:
        meanwhile()  # if no COPY ran it
    result.unchanged = len(unchanged)
    result.written = len(latest) - len(unchanged)
    return result


def _to_look_up(latest: dict[str, ObjectRow], seen: FirstSight | None) -> list[str]:
    if seen is None:
        return list(latest)
    ids = [object_id for object_id in latest if object_id in seen.written]
    seen.written.update(latest)
    return ids


def _known_rows(cursor: Any, spec: ObjectTable, hub: str, ids: list[str]) -> dict[str, tuple[bytes | None, Stamp]]:
    """The digest (None when soft-deleted or unknown) and the stamp of each of ``ids`` the hub has a row for."""
    if not ids:
        return {}
    cursor.execute(
        f"SELECT {spec.id_column}::text, CASE WHEN deleted_at IS NULL THEN payload_digest END, "
        f"stamp_run, stamp_generation, stamp_value FROM {spec.table} "
        f"WHERE {spec.hub_column} = %s AND {spec.id_column} = ANY(%s::uuid[])",
        [hub, ids],
    )
    return {
        object_id: (bytes(digest) if digest is not None else None, Stamp(run, int(generation), int(value)))
        for object_id, digest, run, generation, value in cursor.fetchall()
    }


_STAMP_OLDER = "(t.stamp_run, t.stamp_generation, t.stamp_value) < (%s, %s, %s)"


_OBJECT_COLUMNS = (
    "payload, payload_digest, error, created_at, updated_at, deleted_at, resync_mark, "
    "stamp_run, stamp_generation, stamp_value"
)


@dataclass(frozen=True)
class _Write:
    """One upsert's cursor and context: table and hub, the time, the resync mark, the stamp, the overlapped work."""

    cursor: Any
    spec: ObjectTable
    hub: str
    now: datetime
    mark: str
    stamp: Stamp
    meanwhile: Meanwhile | None


def _insert_new(write: _Write, rows: list[ObjectRow]) -> bool:
    """COPY objects the hub has no row for into the table; False (nothing written) if one turned up meanwhile."""
    spec = write.spec
    try:
        with transaction.atomic(), copy_into(write.cursor, copy_new_statement(spec), write.meanwhile) as copy:
            copy.write(new_object_lines(write.hub, rows, write.now, write.mark, write.stamp))
    except IntegrityError:
        log.warning("hub=%s %s: an object was inserted by someone else meanwhile; upserting", write.hub, spec.table)
        return False
    return True


def copy_new_statement(spec: ObjectTable) -> str:
    """The COPY that puts objects the hub has no row for straight into the table (lines: :func:`new_object_lines`)."""
    return f"COPY {spec.table} ({spec.hub_column}, {spec.id_column}, {spec.name_column}, {_OBJECT_COLUMNS}) FROM STDIN"


def new_object_lines(hub: str, rows: Iterable[ObjectRow], now: datetime, mark: str, stamp: Stamp) -> bytes:
    at = now.isoformat().encode()
    head = copy_text(hub) + b"\t"
    stamped = (stamp.run.isoformat().encode(), str(stamp.generation).encode(), str(stamp.value).encode())
    tail = b"\t".join((b"none", at, at, b"\\N", copy_text(mark), *stamped)) + b"\n"
    return b"".join(head + row.fields + b"\t" + tail for row in rows)


def _upsert_staged(write: _Write, rows: list[ObjectRow], *, force: bool) -> None:
    cursor, spec, hub, now, mark, stamp = write.cursor, write.spec, write.hub, write.now, write.mark, write.stamp
    stage_table(
        cursor, spec.stage, "object_id uuid, name text, payload jsonb, payload_digest bytea", uncompressed="payload"
    )
    with copy_into(
        cursor, f"COPY {spec.stage} (object_id, name, payload, payload_digest) FROM STDIN", write.meanwhile
    ) as copy:
        copy.write(b"".join(row.fields + b"\n" for row in rows))
    # The rows were judged newer than what they replace; the condition repeats it where the statement writes.
    cursor.execute(
        f"""
        INSERT INTO {spec.table} AS t ({spec.hub_column}, {spec.id_column}, {spec.name_column}, {_OBJECT_COLUMNS})
        SELECT %s, object_id, name, payload, payload_digest, 'none', %s, %s, NULL, %s, %s, %s, %s FROM {spec.stage}
        ON CONFLICT ({spec.hub_column}, {spec.id_column}) DO UPDATE SET
            {spec.name_column} = EXCLUDED.{spec.name_column},
            payload = EXCLUDED.payload,
            payload_digest = EXCLUDED.payload_digest,
            error = 'none',
            updated_at = EXCLUDED.updated_at,
            deleted_at = NULL,
            resync_mark = CASE WHEN %s = '' THEN t.resync_mark ELSE EXCLUDED.resync_mark END,
            stamp_run = EXCLUDED.stamp_run,
            stamp_generation = EXCLUDED.stamp_generation,
            stamp_value = EXCLUDED.stamp_value
        WHERE %s OR {_STAMP_OLDER}
        """,
        [hub, now, now, mark, *stamp.key(), mark, force, *stamp.key()],
    )


def _restamp(write: _Write, ids: list[str]) -> None:
    """Rows that already hold this content: they take the newer stamp (and the resync's mark), nothing else."""
    if not ids:
        return
    spec = write.spec
    mark_sql = "resync_mark = %s, " if write.mark else ""
    write.cursor.execute(
        f"UPDATE {spec.table} AS t SET {mark_sql}stamp_run = %s, stamp_generation = %s, stamp_value = %s "
        f"WHERE {spec.hub_column} = %s AND {spec.id_column} = ANY(%s::uuid[])",
        [*([write.mark] if write.mark else []), *write.stamp.key(), write.hub, ids],
    )


def soft_delete_ids(
    spec: ObjectTable, hub: str, ids: Sequence[str], now: datetime, stamp: Stamp, *, force: bool = False
) -> Deleted:
    return _soft_delete_matching(spec, hub, spec.id_column, list(ids), now, stamp, force)


def soft_delete_names(
    spec: ObjectTable,
    hub: str,
    names: Sequence[tuple[str, str]],
    now: datetime,
    stamp: Stamp,
    *,
    force: bool = False,
    keep: Sequence[str] = (),
) -> Deleted:
    """Deletes that carry no usable id, matched as upstream does: by (namespace, name) pairs, by name alone for a
    type without namespaces. An absent namespace matches an absent or empty one. Rows whose id is in ``keep`` (the
    objects the same bundle upserts: deleted, then created again) stay live."""
    if spec.namespace_sql is None:
        values = [name for _, name in names]
        return _soft_delete_matching(spec, hub, spec.name_column, values, now, stamp, force, keep)
    keys = [f"{namespace}/{name}" for namespace, name in names]
    match = f"coalesce({spec.namespace_sql}, '') || '/' || {spec.name_column}"
    return _soft_delete_matching(spec, hub, match, keys, now, stamp, force, keep)


@dataclass
class Deleted:
    deleted: int = 0
    stale: int = 0  # live rows newer than the delete: left alone


def _soft_delete_matching(
    spec: ObjectTable,
    hub: str,
    match: str,
    values: list[Any],
    now: datetime,
    stamp: Stamp,
    force: bool,
    keep: Sequence[str] = (),
) -> Deleted:
    """Soft-delete the hub's live rows whose ``match`` (a column or an SQL expression over the row) is one of
    ``values``, unless they are newer than ``stamp``."""
    if not values:
        return Deleted()
    with connection.cursor() as cursor:
        cast = "::uuid[]" if match == spec.id_column else ""
        cursor.execute(
            f"""
            WITH live AS (
                SELECT {spec.id_column} AS id, %s OR {_STAMP_OLDER} AS older FROM {spec.table} AS t
                WHERE {spec.hub_column} = %s AND {match} = ANY(%s{cast}) AND deleted_at IS NULL
                  AND NOT {spec.id_column} = ANY(%s::uuid[])
            ), gone AS (
                UPDATE {spec.table} AS t SET deleted_at = %s, updated_at = %s,
                    stamp_run = %s, stamp_generation = %s, stamp_value = %s
                FROM live WHERE t.{spec.hub_column} = %s AND t.{spec.id_column} = live.id AND live.older
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM live WHERE NOT older)
            """,
            [force, *stamp.key(), hub, values, list(keep), now, now, *stamp.key(), hub],
        )
        deleted, stale = cursor.fetchone()
        return Deleted(int(deleted), int(stale))


def mark_listed(spec: ObjectTable, hub: str, ids: Sequence[str], mark: str) -> int:
    """Record that resync ``mark`` listed these ids (whether or not they are soft-deleted).

    Rows this resync already upserted carry the mark: they are not written again.
    """
    if not ids:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {spec.table} SET resync_mark = %s "
            f"WHERE {spec.hub_column} = %s AND {spec.id_column} = ANY(%s::uuid[]) AND resync_mark <> %s",
            [mark, hub, list(ids), mark],
        )
        return int(cursor.rowcount)


def sweep_unlisted(spec: ObjectTable, hub: str, mark: str, now: datetime, stamp: Stamp, *, force: bool = False) -> int:
    """Soft-delete the hub's live rows that resync ``mark`` did not list (and, unless ``force``, that hold older
    content than the resync: a row written by a newer bundle stays).

    A forced (authoritative) resync re-bases the rows too: none keeps a stamp newer than the resync's, soft-deleted
    ones included, so no poisoned or future stamp can refuse the hub's next bundles.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {spec.table} AS t SET deleted_at = %s, updated_at = %s, "
            f"stamp_run = %s, stamp_generation = %s, stamp_value = %s "
            f"WHERE {spec.hub_column} = %s AND deleted_at IS NULL AND resync_mark <> %s AND (%s OR {_STAMP_OLDER})",
            [now, now, *stamp.key(), hub, mark, force, *stamp.key()],
        )
        swept = int(cursor.rowcount)
        if force:
            cursor.execute(
                f"UPDATE {spec.table} AS t SET stamp_run = %s, stamp_generation = %s, stamp_value = %s "
                f"WHERE {spec.hub_column} = %s AND (t.stamp_run, t.stamp_generation, t.stamp_value) > (%s, %s, %s)",
                [*stamp.key(), hub, *stamp.key()],
            )
        return swept
