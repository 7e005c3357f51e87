"""In-memory stand-ins for the agent's Redis-backed stores, so one process can hold a thousand hubs.

Each class keeps the interface the agent's code calls (``Emitter``, ``handle_spec_message``, the simulator's
``populate``) and nothing more. The version, state and queue classes subclass the agent's Redis classes only to
keep that interface typed; they never call the Redis constructors and override every method the fleet reaches.
Every class is thread-safe: the spec listener, the change maker and the senders of one hub run on different threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from agent_tasks.inventory import Change, ChangeBatch, Cursor, LogPosition
from agent_tasks.resync_queue import ResyncQueue, Waiting
from agent_tasks.state import StateStore, TypeState
from agent_tasks.types import DIGEST_TYPES, digest_of
from agent_tasks.versions import VersionStore
from globalhub.protocol import jsonutil
from globalhub.protocol.digest import Digest
from globalhub.protocol.version import Version


@dataclass
class _TypeStore:
    """One type's objects (encoded, as the Redis hash holds them), change log and digest."""

    objects: dict[str, bytes] = field(default_factory=dict)
    log: list[tuple[str, str, str]] = field(default_factory=list)  # (position, object id, op) not yet trimmed
    added: int = 0  # changes ever logged (the stream's entries-added)
    entry_digests: dict[str, Digest] = field(default_factory=dict)
    digest: Digest = field(default_factory=Digest)


class MemoryInventory:
    """The agent's ``Inventory`` protocol (what the emitter reads) and the simulator's ``Target`` (what ``populate``
    writes), on dicts. Positions are ``"<n>-0"`` with n the change's ordinal, so they order like stream ids."""

    def __init__(self, hub: str, *, digests: bool = True) -> None:
        self._hub = hub
        self._digests = digests
        self._types: dict[str, _TypeStore] = {}
        self._lock = threading.Lock()

    def _store(self, short_type: str) -> _TypeStore:
        return self._types.setdefault(short_type, _TypeStore())

    # --- what the emitter reads --------------------------------------------------------------------------------

    def list_encoded(self, short_type: str) -> Iterator[tuple[str, bytes]]:
        """A snapshot taken under the lock: the send that iterates it never blocks the hub's writers."""
        with self._lock:
            items = list(self._store(short_type).objects.items())
        return iter(items)

    def get_encoded(self, short_type: str, ids: list[str]) -> list[bytes | None]:
        with self._lock:
            objects = self._store(short_type).objects
            return [objects.get(object_id) for object_id in ids]

    def log_position(self, short_type: str) -> LogPosition:
        with self._lock:
            return self._position(self._store(short_type))

    @staticmethod
    def _position(store: _TypeStore) -> LogPosition:
        return LogPosition(f"{store.added}-0", store.added, len(store.log))

    def changes_since(self, short_type: str, cursor: Cursor, until: LogPosition, limit: int) -> ChangeBatch:
        """As the Redis stream: entries after the cursor up to ``until``; ``lost`` when trimmed past the cursor."""
        after, last = _ordinal(cursor.position), _ordinal(until.last_id)
        with self._lock:
            entries = [entry for entry in self._store(short_type).log if after < _ordinal(entry[0]) <= last]
        return ChangeBatch(entries[:limit], lost=until.trimmed > cursor.count)

    def trim_through(self, short_type: str, cursor: Cursor) -> None:
        """Forget what was sent. Like ``XTRIM MINID``, the entry at the cursor itself is kept."""
        keep_from = _ordinal(cursor.position)
        with self._lock:
            store = self._store(short_type)
            store.log = [entry for entry in store.log if _ordinal(entry[0]) >= keep_from]

    def filling(self, short_type: str) -> bool:
        return False  # nothing lists a hub from scratch here: the inventory is whole from the start

    def digest_at(self, short_type: str) -> tuple[LogPosition, Digest]:
        with self._lock:
            store = self._store(short_type)
            return self._position(store), store.digest

    # --- what the simulator and the change maker write ---------------------------------------------------------

    def apply(self, short_type: str, changes: Iterable[Change], *, chunk: int = 500, log_changes: bool = True) -> int:
        """Write upserts and deletes and log each change, as ``RedisInventory.apply`` (``chunk`` is accepted for
        the simulator's sake; a dict needs no batching)."""
        count = 0
        for change in changes:
            encoded = None if change.obj is None else jsonutil.dumps(change.obj)
            contribution = self._contribution(short_type, encoded, change.obj)
            with self._lock:
                store = self._store(short_type)
                self._write(store, change.object_id, encoded, contribution)
                if log_changes:
                    store.added += 1
                    op = "upsert" if encoded is not None else "delete"
                    store.log.append((f"{store.added}-0", change.object_id, op))
            count += 1
        return count

    def _contribution(self, short_type: str, encoded: bytes | None, obj: Any) -> Digest | None:
        """The entry's share of the type's digest, computed outside the lock (it encodes and hashes)."""
        if not self._digests or encoded is None or short_type not in DIGEST_TYPES:
            return None
        return digest_of(short_type, encoded, self._hub, obj) or Digest()

    @staticmethod
    def _write(store: _TypeStore, object_id: str, encoded: bytes | None, contribution: Digest | None) -> None:
        old = store.entry_digests.pop(object_id, None)
        if old is not None:
            store.digest = store.digest.without_rows(old.count, old.hash)
        if encoded is None:
            store.objects.pop(object_id, None)
            return
        store.objects[object_id] = encoded
        if contribution is not None:
            store.entry_digests[object_id] = contribution
            store.digest = store.digest.plus(contribution)

    def count(self, short_type: str) -> int:
        with self._lock:
            return len(self._store(short_type).objects)

    def clear(self, short_type: str) -> None:
        with self._lock:
            self._types.pop(short_type, None)

    def get(self, short_type: str, object_id: str) -> dict[str, Any] | None:
        (raw,) = self.get_encoded(short_type, [object_id])
        return None if raw is None else dict(jsonutil.loads(raw))


def _ordinal(position: str) -> int:
    return int(position.partition("-")[0] or 0)


class MemoryVersions(VersionStore):
    """The agent's per-type versions, in a dict. ``Version`` objects are copied in and out, as Redis would."""

    def __init__(self) -> None:  # no super().__init__(): there is no Redis
        self._versions: dict[str, Version] = {}
        self._lock = threading.Lock()

    def get(self, short_type: str) -> Version:
        with self._lock:
            return self._versions.get(short_type, Version()).copy()

    def set(self, short_type: str, version: Version) -> None:
        with self._lock:
            self._versions[short_type] = version.copy()

    def advance_generation(self, short_type: str) -> Version:
        with self._lock:
            version = self._versions.get(short_type, Version()).copy()
            version.next()
            self._versions[short_type] = version
            return version.copy()

    def reset_all(self) -> None:
        with self._lock:
            self._versions.clear()

    def all(self) -> dict[str, Version]:
        with self._lock:
            return {name: version.copy() for name, version in self._versions.items()}


class MemoryState(StateStore):
    """The agent's per-type bookkeeping (cursors above all), in a dict."""

    def __init__(self) -> None:  # no super().__init__(): there is no Redis
        self._states: dict[str, TypeState] = {}
        self._lock = threading.Lock()

    def all(self) -> dict[str, TypeState]:
        with self._lock:
            return {name: _copy_state(state) for name, state in self._states.items()}

    def get(self, name: str) -> TypeState:
        with self._lock:
            return _copy_state(self._states.get(name, TypeState()))

    def update(self, name: str, **values: float | str | None) -> None:
        with self._lock:
            state = self._states.setdefault(name, TypeState())
            for key, value in values.items():
                if value is not None:
                    setattr(state, key, value)

    def count_sent(self, name: str, messages: int, now: float) -> None:
        with self._lock:
            state = self._states.setdefault(name, TypeState())
            state.sent_messages += messages
            state.last_sent = now

    def record_error(self, name: str, error: str, now: float) -> None:
        self.update(name, last_error=error[:500], last_error_at=now)

    def clear_error(self, name: str) -> None:
        self.update(name, last_error="", last_error_at=None)

    def reset(self) -> None:
        with self._lock:
            self._states.clear()


def _copy_state(state: TypeState) -> TypeState:
    return TypeState(**{**state.__dict__, "extra": dict(state.extra)})


class MemoryQueue(ResyncQueue):
    """The hub's FIFO of types to resync: coalescing (a waiting type keeps its place) and the request ids each
    type's next resync answers. What ``handle_spec_message`` and the drain call; no in-flight recovery or retry
    set (a process that dies takes its hubs with it)."""

    def __init__(self) -> None:  # no super().__init__(): there is no Redis
        self._waiting: dict[str, float] = {}  # type -> enqueued at, in queue order
        self._answers: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def push(self, types: Iterable[str], now: float | None = None) -> int:
        stamp = time.time() if now is None else now
        added = 0
        with self._lock:
            for name in types:
                if name not in self._waiting:
                    self._waiting[name] = stamp
                    added += 1
        return added

    def pop(self, owner: str = "", now: float | None = None) -> Waiting | None:
        with self._lock:
            if not self._waiting:
                return None
            name = next(iter(self._waiting))
            return Waiting(name, self._waiting.pop(name))

    def done(self, short_type: str) -> None:
        """Nothing stays in flight in memory."""

    def length(self) -> int:
        with self._lock:
            return len(self._waiting)

    def items(self) -> list[Waiting]:
        with self._lock:
            return [Waiting(name, since) for name, since in self._waiting.items()]

    def clear(self) -> None:
        with self._lock:
            self._waiting.clear()

    def note_answers(self, types: Iterable[str], request_id: str) -> None:
        if not request_id:
            return
        with self._lock:
            for name in types:
                self._answers.setdefault(name, set()).add(request_id)

    def answers(self, short_type: str) -> list[str]:
        with self._lock:
            members = self._answers.get(short_type, set())
            return sorted(members, key=lambda i: (len(i), i))

    def answered(self, short_type: str, request_ids: Iterable[str]) -> None:
        with self._lock:
            self._answers.get(short_type, set()).difference_update(request_ids)
