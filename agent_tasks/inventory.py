"""The hub's inventory: what the agent reports. Kept in the hub's Redis, written by the hub simulator.

Layout (``<hub>`` is the hub name, ``<type>`` the short event type such as ``managedcluster``):

* ``gh:<hub>:inv:<type>``: a hash, object id -> the object's JSON;
* ``gh:<hub>:changes:<type>``: a stream of changes (``op`` = ``upsert``/``delete``, ``id``), for delta sync.

Writes go through :meth:`RedisInventory.apply` so that the hash and the change log move together (one MULTI).
A Kubernetes-backed inventory would implement the same three read methods.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from agent_tasks.redisutil import text

SCAN_BATCH = 1000
CHANGE_LOG_MAX = 1_000_000


class Inventory(Protocol):
    def list_encoded(self, short_type: str) -> Iterator[tuple[str, bytes]]:
        """Every object of a type as (id, JSON bytes), streamed."""
        ...

    def count(self, short_type: str) -> int: ...

    def get(self, short_type: str, object_id: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True, slots=True)
class Change:
    object_id: str
    obj: dict[str, Any] | None  # None: delete


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

    def count(self, short_type: str) -> int:
        return int(self._redis.hlen(self.objects_key(short_type)))

    def get(self, short_type: str, object_id: str) -> dict[str, Any] | None:
        raw = self._redis.hget(self.objects_key(short_type), object_id)
        return None if raw is None else dict(json.loads(raw))

    def ids(self, short_type: str) -> set[str]:
        return {text(key) for key in self._redis.hkeys(self.objects_key(short_type))}

    def apply(self, short_type: str, changes: Iterable[Change], *, chunk: int = 500) -> int:
        """Write upserts and deletes, logging each in the change stream; returns the number applied."""
        count = 0
        pipe = self._redis.pipeline(transaction=True)
        for change in changes:
            if change.obj is None:
                pipe.hdel(self.objects_key(short_type), change.object_id)
                fields: dict[str | bytes, str | bytes] = {"op": "delete", "id": change.object_id}
            else:
                pipe.hset(self.objects_key(short_type), change.object_id, json.dumps(change.obj, separators=(",", ":")))
                fields = {"op": "upsert", "id": change.object_id}
            pipe.xadd(
                self.changes_key(short_type),
                fields,  # type: ignore[arg-type]
                maxlen=CHANGE_LOG_MAX,
                approximate=True,
            )
            count += 1
            if count % chunk == 0:
                pipe.execute()
        pipe.execute()
        return count

    def clear(self, short_type: str) -> None:
        self._redis.delete(self.objects_key(short_type), self.changes_key(short_type))
