"""The Kubernetes source's state, in the hub's Redis, for ``ctl status`` and the metrics.

``gh:<hub>:agent:source`` is one hash, rewritten by the watcher every couple of seconds:

* ``source``, ``server``, ``credentials``, ``started_at``, ``updated_at``, and ``stopped_at`` once it stopped;
* per resource (``managedclusters``, ``policies``, ``clusterclaims``): ``<resource>.connected`` (1 while a watch is
  open), ``.objects``, ``.resource_version``, ``.last_event_at`` (the last change), ``.last_contact_at`` (anything
  from the server, bookmarks included), ``.relists``, ``.last_relist_at``, ``.last_relist_seconds``,
  ``.watch_restarts``, ``.errors``, ``.last_error``, ``.last_error_at``;
* per inventory type: ``type.<type>.objects``.

``gh:<hub>:agent:source:epoch`` holds a token of the running watcher. When it disappears, Redis lost its data (it
restarted empty, or the hub's keys were deleted), and the watcher lists every resource again.

A reader treats the watcher as not running when it stopped, or when ``updated_at`` is older than
:data:`STALE_AFTER` (it died).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any

import redis

from agent_tasks.redisutil import text

STALE_AFTER = 30.0  # seconds without an update: the watcher is not running


@dataclass
class ResourceState:
    """What one resource's watcher knows about its own health (written by its thread, read by the writer thread)."""

    connected: bool = False
    objects: int = 0
    resource_version: str = ""
    last_event_at: float | None = None
    last_contact_at: float | None = None
    relists: int = 0
    last_relist_at: float | None = None
    last_relist_seconds: float | None = None
    watch_restarts: int = 0
    errors: int = 0
    last_error: str = ""
    last_error_at: float | None = None
    type_objects: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def failed(self, error: str, now: float) -> None:
        with self.lock:
            self.connected = False
            self.errors += 1
            self.last_error = error[:500]
            self.last_error_at = now

    def fields(self, resource: str) -> dict[str, str]:
        with self.lock:
            values: dict[str, str] = {}
            for item in fields(self):
                if item.name in ("lock", "type_objects"):
                    continue
                value = getattr(self, item.name)
                if value is None or value == "":
                    continue
                values[f"{resource}.{item.name}"] = _encode(value)
            for short_type, count in self.type_objects.items():
                values[f"type.{short_type}.objects"] = str(count)
            return values


def _encode(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    return str(value)


class SourceStatus:
    def __init__(self, client: redis.Redis, hub: str) -> None:
        self._redis = client
        self.key = f"gh:{hub}:agent:source"

    def publish(self, header: dict[str, str], states: dict[str, ResourceState], now: float | None = None) -> None:
        """Replace the hash with the current state of every resource."""
        mapping: dict[str, str] = {**header, "updated_at": repr(time.time() if now is None else now)}
        for resource, state in states.items():
            mapping.update(state.fields(resource))
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self.key)
        pipe.hset(self.key, mapping=mapping)  # type: ignore[arg-type]
        pipe.execute()

    def read(self, now: float | None = None) -> dict[str, Any] | None:
        """The source's state as plain data, or None when no watcher ever ran for this hub."""
        raw = {text(k): text(v) for k, v in self._redis.hgetall(self.key).items()}
        if not raw:
            return None
        moment = time.time() if now is None else now
        updated = float(raw.get("updated_at", "0"))
        report: dict[str, Any] = {
            "source": raw.get("source", ""),
            "server": raw.get("server", ""),
            "credentials": raw.get("credentials", ""),
            "running": "stopped_at" not in raw and moment - updated <= STALE_AFTER,
            "updated_seconds_ago": round(moment - updated, 1),
            "resources": {},
            "types": {},
        }
        for key, value in raw.items():
            head, _, attribute = key.rpartition(".")
            if key.startswith("type.") and attribute == "objects":
                report["types"][head.removeprefix("type.")] = int(value)
            elif head and head != "type" and "." not in head:
                report["resources"].setdefault(head, {})[attribute] = _decode(attribute, value)
        for state in report["resources"].values():
            for stamp in ("last_event_at", "last_contact_at", "last_relist_at", "last_error_at"):
                if stamp in state:
                    state[stamp.replace("_at", "_age_seconds")] = round(moment - state[stamp], 1)
            if not report["running"]:
                state["connected"] = False
        return report

    def clear(self) -> None:
        self._redis.delete(self.key)

    @property
    def epoch_key(self) -> str:
        return f"{self.key}:epoch"

    def claim_epoch(self, token: str) -> None:
        """Mark the hub's data in Redis as the watcher's (a key that lives as long as Redis keeps its data)."""
        self._redis.set(self.epoch_key, token)

    def epoch(self) -> str | None:
        raw = self._redis.get(self.epoch_key)
        return None if raw is None else text(raw)


_NUMBERS = {"objects", "relists", "watch_restarts", "errors"}
_TIMES = {"last_event_at", "last_contact_at", "last_relist_at", "last_error_at", "last_relist_seconds"}


def _decode(attribute: str, value: str) -> Any:
    if attribute == "connected":
        return value == "1"
    if attribute in _NUMBERS:
        return int(value)
    if attribute in _TIMES:
        return float(value)
    return value
