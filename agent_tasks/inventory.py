"""The hub's inventory: what the agent reports. Kept in the hub's Redis, written by the hub simulator.

Layout (``<hub>`` is the hub name, ``<type>`` the short event type such as ``managedcluster``):

* ``gh:<hub>:inv:<type>``: a hash, object id -> the object's JSON;
* ``gh:<hub>:changes:<type>``: a stream of changes (``op`` = ``upsert``/``delete``, ``id``), for delta sync;
* ``gh:<hub>:inv:filling:<type>``: present (with a short expiry, renewed) while a source lists the type from
  scratch: a full resync of it then waits, since it would send a partial inventory as if it were whole.

Writes go through :meth:`RedisInventory.apply` so that the hash and the change log move together (one MULTI).
A Kubernetes-backed inventory would implement the same three read methods.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from agent_tasks.redisutil import text
from globalhub.protocol import jsonutil

SCAN_BATCH = 1000
CHANGE_LOG_MAX = 1_000_000
FILLING_TTL = 30  # seconds a "being listed" mark lasts unless renewed (a source that died leaves no lasting mark)


class Inventory(Protocol):
    """What the agent reads. A Kubernetes-backed inventory would implement the same methods."""

    def list_encoded(self, short_type: str) -> Iterator[tuple[str, bytes]]:
        """Every object of a type as (id, JSON bytes), streamed."""
        ...

    def get_encoded(self, short_type: str, ids: list[str]) -> list[bytes | None]:
        """The current JSON of each id (None for an id that no longer exists)."""
        ...

    def log_position(self, short_type: str) -> LogPosition:
        """Where the change log of a type ends now."""
        ...

    def changes_since(self, short_type: str, cursor: Cursor, until: LogPosition, limit: int) -> ChangeBatch:
        """Changes after ``cursor`` up to ``until``, at most ``limit`` of them."""
        ...

    def trim_through(self, short_type: str, cursor: Cursor) -> None:
        """Forget changes that were sent."""
        ...

    def filling(self, short_type: str) -> bool:
        """Whether a source is listing the type right now, so that what the inventory holds may be partial."""
        ...


@dataclass(frozen=True, slots=True)
class Change:
    object_id: str
    obj: dict[str, Any] | None  # None: delete


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """Changes read from the change log: ``(position, object id, op)`` in order, and whether some were lost."""

    entries: list[tuple[str, str, str]]
    lost: bool  # the log was trimmed past the cursor: changes are missing, only a full resync can repair

    @property
    def last(self) -> str | None:
        return self.entries[-1][0] if self.entries else None


@dataclass(frozen=True, slots=True)
class LogPosition:
    last_id: str
    added: int  # changes ever logged
    length: int  # changes still in the log

    @property
    def trimmed(self) -> int:
        return self.added - self.length


@dataclass(frozen=True, slots=True)
class Cursor:
    """How far changes were sent: the position of the last sent change and how many changes that covers."""

    position: str = "0-0"
    count: int = 0

    def after(self, batch: ChangeBatch) -> Cursor:
        last = batch.last
        return self if last is None else Cursor(last, self.count + len(batch.entries))

    @classmethod
    def at(cls, position: LogPosition) -> Cursor:
        return cls(position.last_id, position.added)

    def __str__(self) -> str:
        return f"{self.position}/{self.count}"

    @classmethod
    def parse(cls, value: str) -> Cursor:
        position, _, count = value.partition("/")
        return cls(position or "0-0", int(count or 0))


def stream_id(position: str) -> tuple[int, int]:
    milliseconds, _, sequence = position.partition("-")
    return int(milliseconds), int(sequence or 0)


class RedisInventory:
    def __init__(self, client: redis.Redis, hub: str) -> None:
        self._redis = client
        self._hub = hub

    def objects_key(self, short_type: str) -> str:
        return f"gh:{self._hub}:inv:{short_type}"

    def changes_key(self, short_type: str) -> str:
        return f"gh:{self._hub}:changes:{short_type}"

    def list_encoded(self, short_type: str) -> Iterator[tuple[str, bytes]]:
        for raw_id, raw in self._redis.hscan_iter(self.objects_key(short_type), count=SCAN_BATCH):
            yield text(raw_id), raw if isinstance(raw, bytes) else str(raw).encode()

    def get_encoded(self, short_type: str, ids: list[str]) -> list[bytes | None]:
        if not ids:
            return []
        values = self._redis.hmget(self.objects_key(short_type), ids)
        return [v if v is None or isinstance(v, bytes) else str(v).encode() for v in values]

    def log_position(self, short_type: str) -> LogPosition:
        """The newest change and how many changes were ever logged, read together (one XINFO)."""
        try:
            info = self._redis.xinfo_stream(self.changes_key(short_type))
        except redis.ResponseError:  # no change was ever logged for this type
            return LogPosition("0-0", 0, 0)
        return LogPosition(text(info["last-generated-id"]), int(info["entries-added"]), int(info["length"]))

    def changes_since(self, short_type: str, cursor: Cursor, until: LogPosition, limit: int) -> ChangeBatch:
        """Changes after ``cursor`` up to ``until``; ``lost`` when the log was trimmed past the cursor."""
        lost = until.trimmed > cursor.count
        if stream_id(until.last_id) <= stream_id(cursor.position):
            return ChangeBatch([], lost=lost)
        raw = self._redis.xrange(
            self.changes_key(short_type), min=f"({cursor.position}", max=until.last_id, count=limit
        )
        entries = [
            (text(position), text(fields[b"id"]), text(fields[b"op"]))  # type: ignore[index]
            for position, fields in raw or ()
        ]
        return ChangeBatch(entries, lost=lost)

    def trim_through(self, short_type: str, cursor: Cursor) -> None:
        """Forget changes that were sent (everything before the cursor's position)."""
        self._redis.xtrim(self.changes_key(short_type), minid=cursor.position, approximate=True)

    def filling_key(self, short_type: str) -> str:
        return f"gh:{self._hub}:inv:filling:{short_type}"

    def filling(self, short_type: str) -> bool:
        return bool(self._redis.exists(self.filling_key(short_type)))

    def mark_filling(self, types: Iterable[str], *, ttl: int = FILLING_TTL) -> None:
        """Say the types are being listed (again: renews the mark); it lapses after ``ttl`` seconds unless renewed."""
        pipe = self._redis.pipeline(transaction=False)
        for short_type in types:
            pipe.set(self.filling_key(short_type), "1", ex=ttl)
        pipe.execute()

    def done_filling(self, types: Iterable[str]) -> None:
        keys = [self.filling_key(short_type) for short_type in types]
        if keys:
            self._redis.delete(*keys)

    def count(self, short_type: str) -> int:
        return int(self._redis.hlen(self.objects_key(short_type)))

    def get(self, short_type: str, object_id: str) -> dict[str, Any] | None:
        raw = self._redis.hget(self.objects_key(short_type), object_id)
        return None if raw is None else dict(jsonutil.loads(raw))

    def ids(self, short_type: str) -> set[str]:
        return {text(key) for key in self._redis.hkeys(self.objects_key(short_type))}

    def apply(self, short_type: str, changes: Iterable[Change], *, chunk: int = 500) -> int:
        """Write upserts and deletes, logging each in the change stream; returns the number applied.

        Each chunk is one MULTI: the hash takes the chunk's last state of every object in one HSET and one HDEL,
        and the change stream one entry per change, in order.
        """
        count = 0
        batch: list[Change] = []
        for change in changes:
            batch.append(change)
            count += 1
            if len(batch) >= chunk:
                self._write(short_type, batch)
                batch = []
        if batch:
            self._write(short_type, batch)
        return count

    def _write(self, short_type: str, batch: list[Change]) -> None:
        final: dict[str, dict[str, Any] | None] = {}
        for change in batch:
            final.pop(change.object_id, None)
            final[change.object_id] = change.obj
        upserts = {object_id: jsonutil.dumps(obj) for object_id, obj in final.items() if obj is not None}
        deletes = [object_id for object_id, obj in final.items() if obj is None]
        pipe = self._redis.pipeline(transaction=True)
        if upserts:
            pipe.hset(self.objects_key(short_type), mapping=upserts)  # type: ignore[arg-type]
        if deletes:
            pipe.hdel(self.objects_key(short_type), *deletes)
        changes_key = self.changes_key(short_type)
        for change in batch:
            fields = {"op": "upsert" if change.obj is not None else "delete", "id": change.object_id}
            pipe.xadd(changes_key, fields, maxlen=CHANGE_LOG_MAX, approximate=True)  # type: ignore[arg-type]
        pipe.execute()

    def clear(self, short_type: str) -> None:
        self._redis.delete(self.objects_key(short_type), self.changes_key(short_type))
