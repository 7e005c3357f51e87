"""Set-based writes for hybrid object tables: COPY into a staging table, then one upsert statement.

No row-by-row ORM saves on the hot path. Every statement is scoped by hub, so one hub can never touch another
hub's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection


@dataclass(frozen=True)
class ObjectTable:
    """Where one hybrid type's objects live and how its columns are named."""

    table: str
    id_column: str
    name_column: str
    hub_column: str = "leaf_hub_name"

    @property
    def stage(self) -> str:
        return f"_stage_{self.table}"


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
    object_id: str  # canonical UUID text
    name: str
    payload_json: str


def upsert_objects(spec: ObjectTable, hub: str, rows: Sequence[ObjectRow], now: datetime, mark: str) -> int:
    """Insert or update ``rows`` for ``hub``, clearing ``deleted_at``; a non-empty ``mark`` sets ``resync_mark``.

    The last row wins when an id appears twice. Returns the number of rows written.
    """
    latest = {row.object_id: row for row in rows}
    if not latest:
        return 0
    with connection.cursor() as cursor:
        stage_table(cursor, spec.stage, "object_id uuid, name text, payload jsonb", uncompressed="payload")
        with cursor.cursor.copy(f"COPY {spec.stage} (object_id, name, payload) FROM STDIN") as copy:
            for row in latest.values():
                copy.write_row((row.object_id, row.name, row.payload_json))
        cursor.execute(
            f"""
            INSERT INTO {spec.table} AS t ({spec.hub_column}, {spec.id_column}, {spec.name_column}, payload,
                                          error, created_at, updated_at, deleted_at, resync_mark)
            SELECT %s, object_id, name, payload, 'none', %s, %s, NULL, %s FROM {spec.stage}
            ON CONFLICT ({spec.hub_column}, {spec.id_column}) DO UPDATE SET
                {spec.name_column} = EXCLUDED.{spec.name_column},
                payload = EXCLUDED.payload,
                error = 'none',
                updated_at = EXCLUDED.updated_at,
                deleted_at = NULL,
                resync_mark = CASE WHEN %s = '' THEN t.resync_mark ELSE EXCLUDED.resync_mark END
            """,
            [hub, now, now, mark, mark],
        )
        return int(cursor.rowcount)


def soft_delete_ids(spec: ObjectTable, hub: str, ids: Sequence[str], now: datetime) -> int:
    return _soft_delete_matching(spec, hub, spec.id_column, list(ids), now)


def soft_delete_names(spec: ObjectTable, hub: str, names: Sequence[str], now: datetime) -> int:
    """Deletes that carry no usable id are matched by name, as upstream does."""
    return _soft_delete_matching(spec, hub, spec.name_column, list(names), now)


def _soft_delete_matching(spec: ObjectTable, hub: str, column: str, values: list[Any], now: datetime) -> int:
    if not values:
        return 0
    with connection.cursor() as cursor:
        cast = "::uuid[]" if column == spec.id_column else ""
        cursor.execute(
            f"UPDATE {spec.table} SET deleted_at = %s, updated_at = %s "
            f"WHERE {spec.hub_column} = %s AND {column} = ANY(%s{cast}) AND deleted_at IS NULL",
            [now, now, hub, values],
        )
        return int(cursor.rowcount)


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


def sweep_unlisted(spec: ObjectTable, hub: str, mark: str, now: datetime) -> int:
    """Soft-delete the hub's live rows that resync ``mark`` did not list."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {spec.table} SET deleted_at = %s, updated_at = %s "
            f"WHERE {spec.hub_column} = %s AND deleted_at IS NULL AND resync_mark <> %s",
            [now, now, hub, mark],
        )
        return int(cursor.rowcount)
