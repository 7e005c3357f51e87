"""The hub's inventory: what the agent reports. Kept in the hub's Redis, written by the hub simulator.

Layout (``<hub>`` is the hub name, ``<type>`` the short event type such as ``managedcluster``):

* ``gh:<hub>:inv:<type>``: a hash, object id -> the object's JSON;
* ``gh:<hub>:changes:<type>``: a stream of changes (``op`` = ``upsert``/``delete``, ``id``), for delta sync;
* ``gh:<hub>:inv:filling:<type>``: present (with a short expiry, renewed) while a source lists the type from
  scratch: a full resync of it then waits, since it would send a partial inventory as if it were whole;
* ``gh:<hub>:inv:digest:<type>`` (``n``: rows, ``h``: 16 hex digits) and ``gh:<hub>:inv:dg:<type>`` (object id ->
  ``<rows>:<hash>``): the type's anti-entropy digest (``globalhub/protocol/digest.py``), kept up to date by every
  write in the same MULTI as the objects, one changed entry at a time.

Writes go through :meth:`RedisInventory.apply` so that the hash and the change log move together (one MULTI).
A Kubernetes-backed inventory would implement the same three read methods.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from agent_tasks.redisutil import text
from agent_tasks.types import DIGEST_TYPES, digest_of
from globalhub.protocol import jsonutil
from globalhub.protocol.digest import Digest

SCAN_BATCH = 1000
CHANGE_LOG_MAX = 1_000_000
FILLING_TTL = 30  # seconds a "being listed" mark lasts unless renewed (a source that died leaves no lasting mark)

# KEYS: entry digests hash, aggregate hash. ARGV: (id, rows, hash hex) triples; rows -1: the entry is gone.
# XORs each entry's old contribution out and its new one in, on two 32-bit halves (Lua's bit library).
_DIGEST = """
local function halves(h) return tonumber(string.sub(h, 1, 8), 16), tonumber(string.sub(h, 9, 16), 16) end
local total = redis.call('HMGET', KEYS[2], 'n', 'h')
local n = tonumber(total[1] or '0')
local hi, lo = 0, 0
if total[2] then hi, lo = halves(total[2]) end
for i = 1, #ARGV, 3 do
  local id, rows = ARGV[i], tonumber(ARGV[i + 1])
  local old = redis.call('HGET', KEYS[1], id)
  if old then
    local old_rows, old_hash = string.match(old, '^(%d+):(%x+)$')
    local a, b = halves(old_hash)
    hi, lo, n = bit.bxor(hi, a), bit.bxor(lo, b), n - tonumber(old_rows)
  end
  if rows >= 0 then
    local a, b = halves(ARGV[i + 2])
    hi, lo, n = bit.bxor(hi, a), bit.bxor(lo, b), n + rows
    redis.call('HSET', KEYS[1], id, rows .. ':' .. ARGV[i + 2])
  elseif old then
    redis.call('HDEL', KEYS[1], id)
  end
end
redis.call('HSET', KEYS[2], 'n', n, 'h', bit.tohex(hi, 8) .. bit.tohex(lo, 8))
return n
"""


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

    def digest_at(self, short_type: str) -> tuple[LogPosition, Digest]:
        """Where the change log ends and the type's anti-entropy digest at that point, read together."""
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
        self._digest = client.register_script(_DIGEST)

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

    def apply(self, short_type: str, changes: Iterable[Change], *, chunk: int = 500, log_changes: bool = True) -> int:
        """Write upserts and deletes, logging each in the change stream; returns the number applied.

        Each chunk is one MULTI: the hash takes the chunk's last state of every object in one HSET and one HDEL,
        the digest the change of each, and the change stream one entry per change, in order. ``log_changes=False``
        writes behind the change stream (what a missed watch event or a bug would leave): only the digest tells.
        """
        count = 0
        batch: list[Change] = []
        for change in changes:
            batch.append(change)
            count += 1
            if len(batch) >= chunk:
                self._write(short_type, batch, log_changes)
                batch = []
        if batch:
            self._write(short_type, batch, log_changes)
        return count

    def _write(self, short_type: str, batch: list[Change], log_changes: bool = True) -> None:
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
        self._update_digest(pipe, short_type, upserts, deletes, final)
        changes_key = self.changes_key(short_type)
        for change in batch if log_changes else ():
            fields = {"op": "upsert" if change.obj is not None else "delete", "id": change.object_id}
            pipe.xadd(changes_key, fields, maxlen=CHANGE_LOG_MAX, approximate=True)  # type: ignore[arg-type]
        pipe.execute()

    def clear(self, short_type: str) -> None:
        self._redis.delete(
            self.objects_key(short_type),
            self.changes_key(short_type),
            self.digest_key(short_type),
            self.entry_digests_key(short_type),
        )

    # --- anti-entropy digest -----------------------------------------------------------------------------------

    def digest_key(self, short_type: str) -> str:
        return f"gh:{self._hub}:inv:digest:{short_type}"

    def entry_digests_key(self, short_type: str) -> str:
        return f"gh:{self._hub}:inv:dg:{short_type}"

    def _update_digest(
        self,
        pipe: redis.client.Pipeline,
        short_type: str,
        upserts: dict[str, bytes],
        deletes: list[str],
        objects: dict[str, dict[str, Any] | None],
    ) -> None:
        if short_type not in DIGEST_TYPES:
            return
        args: list[str | int] = []
        for object_id, encoded in upserts.items():
            contribution = digest_of(short_type, encoded, self._hub, objects.get(object_id)) or Digest()
            args += [object_id, contribution.count, contribution.hex]
        for object_id in deletes:
            args += [object_id, -1, ""]
        if args:
            self._digest(keys=[self.entry_digests_key(short_type), self.digest_key(short_type)], args=args, client=pipe)

    def digest(self, short_type: str) -> Digest:
        """The type's digest as kept by the writes."""
        count, hex_hash = self._redis.hmget(self.digest_key(short_type), ["n", "h"])
        return _digest(count, hex_hash)

    def digest_at(self, short_type: str) -> tuple[LogPosition, Digest]:
        """The change log's end and the digest, read together (one MULTI): the digest of the inventory as of that
        position in the log. An inventory written before digests were kept gets its digest built first."""
        if short_type in DIGEST_TYPES and not self._redis.exists(self.digest_key(short_type)):
            self.rebuild_digest(short_type)
        pipe = self._redis.pipeline(transaction=True)
        pipe.xinfo_stream(self.changes_key(short_type))
        pipe.hmget(self.digest_key(short_type), ["n", "h"])
        info, (count, hex_hash) = pipe.execute(raise_on_error=False)
        if isinstance(info, Exception):  # no change was ever logged for this type
            position = LogPosition("0-0", 0, 0)
        else:
            position = LogPosition(text(info["last-generated-id"]), int(info["entries-added"]), int(info["length"]))
        return position, _digest(count, hex_hash)

    def rebuild_digest(self, short_type: str) -> None:
        """Build the type's digest from every object (an inventory written before digests were kept). Optimistic:
        should the objects change meanwhile, it starts over (WATCH)."""

        def build(pipe: redis.client.Pipeline) -> None:
            entries: dict[str, str] = {}
            total = Digest()
            for object_id, encoded in pipe.hscan_iter(self.objects_key(short_type), count=SCAN_BATCH):
                contribution = digest_of(short_type, bytes(encoded), self._hub) or Digest()
                entries[text(object_id)] = f"{contribution.count}:{contribution.hex}"
                total = total.plus(contribution)
            pipe.multi()
            pipe.delete(self.entry_digests_key(short_type))
            if entries:
                pipe.hset(self.entry_digests_key(short_type), mapping=entries)  # type: ignore[arg-type]
            pipe.hset(self.digest_key(short_type), mapping={"n": total.count, "h": total.hex})

        self._redis.transaction(build, self.objects_key(short_type))

    def computed_digest(self, short_type: str) -> Digest | None:
        """The digest computed from every object (what the kept one must equal); None for a type without one."""
        if short_type not in DIGEST_TYPES:
            return None
        total = Digest()
        for _, encoded in self.list_encoded(short_type):
            total = total.plus(digest_of(short_type, encoded, self._hub) or Digest())
        return total


def _digest(count: bytes | str | None, hex_hash: bytes | str | None) -> Digest:
    if count is None or hex_hash is None:
        return Digest()
    return Digest.parse(int(text(count)), text(hex_hash))
