"""Writes a view's entries into the inventory: only what changed, and after a complete list, removes the rest.

The writer remembers a 16-byte digest of every entry it holds, so an unchanged object costs no Redis write and no
change-log entry. A digest covers the entry's content without ``metadata.resourceVersion``: an object whose only
change is its resourceVersion (and, for a Policy's spec entry, its status, which the view empties) is unchanged.

A relist is reconciled against what the inventory holds, not against memory: :meth:`InventoryWriter.load` reads the
inventory's entries first, so entries written by an earlier run, or removed by someone else, are judged correctly.
Upserts go in as the list pages arrive; removals wait until the list is complete, so an interrupted list never
removes anything (it leaves stale entries until the next complete one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import orjson

from agent_tasks.inventory import Change, RedisInventory
from agent_tasks.kube.views import Entry
from globalhub.protocol import jsonutil

WRITE_CHUNK = 500


def content_digest(obj: Any) -> bytes:
    """16 bytes that change when the entry's content (everything but ``metadata.resourceVersion``) changes."""
    if isinstance(obj, dict):
        metadata = obj.get("metadata")
        if isinstance(metadata, dict) and "resourceVersion" in metadata:
            obj = {**obj, "metadata": {k: v for k, v in metadata.items() if k != "resourceVersion"}}
    try:
        canonical = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # what orjson cannot write (an integer wider than 64 bits): the slower, complete writer
        import json

        canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.blake2b(canonical, digest_size=16).digest()


class InventoryWriter:
    """The inventory types one view owns, as the view says they are."""

    def __init__(self, inventory: RedisInventory, types: Iterable[str]) -> None:
        self.inventory = inventory
        self._digests: dict[str, dict[str, bytes]] = {short: {} for short in types}

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(self._digests)

    def count(self, short_type: str) -> int:
        return len(self._digests[short_type])

    def ids(self, short_type: str) -> list[str]:
        return list(self._digests[short_type])

    def load(self) -> None:
        """Read what the inventory holds now (before a relist is reconciled against it)."""
        for short_type, digests in self._digests.items():
            digests.clear()
            for object_id, raw in self.inventory.list_encoded(short_type):
                try:
                    digests[object_id] = content_digest(jsonutil.loads(raw))
                except ValueError:
                    digests[object_id] = b""  # unreadable: any listed content replaces it

    def write(self, entries: Iterable[Entry]) -> int:
        """Store entries that differ from what the inventory holds; returns how many changes were written.

        An id given twice counts with its last value (a view may say an entry changed twice in one go).
        """
        final: dict[tuple[str, str], dict[str, Any] | None] = {}
        for short_type, object_id, value in entries:
            final.pop((short_type, object_id), None)  # keep the order of last changes
            final[(short_type, object_id)] = value
        changes: dict[str, list[Change]] = {}
        pending: list[tuple[str, str, bytes | None]] = []
        for (short_type, object_id), value in final.items():
            digests = self._digests[short_type]
            if value is None:
                if object_id not in digests:
                    continue
                digest = None
            else:
                digest = content_digest(value)
                if digests.get(object_id) == digest:
                    continue
            changes.setdefault(short_type, []).append(Change(object_id, value))
            pending.append((short_type, object_id, digest))
        for short_type, batch in changes.items():
            self.inventory.apply(short_type, batch, chunk=WRITE_CHUNK)
        for short_type, object_id, digest in pending:  # only after Redis took them
            if digest is None:
                self._digests[short_type].pop(object_id, None)
            else:
                self._digests[short_type][object_id] = digest
        return len(pending)

    def relist(self) -> Relist:
        """Start reconciling a complete list against the inventory (reads the inventory first)."""
        self.load()
        return Relist(self)


class Relist:
    """One complete list being reconciled: upserts as they come, removals of everything unlisted at the end."""

    def __init__(self, writer: InventoryWriter) -> None:
        self._writer = writer
        self._present: dict[str, dict[str, bool]] = {short: {} for short in writer.types}
        self.written = 0

    def add(self, entries: Iterable[Entry]) -> None:
        upserts: list[Entry] = []
        for entry in entries:
            short_type, object_id, value = entry
            self._present[short_type][object_id] = value is not None
            if value is not None:
                upserts.append(entry)
        self.written += self._writer.write(upserts)

    def finish(self) -> int:
        """Remove every entry the list did not end with; returns how many changes the whole relist wrote."""
        removals: list[Entry] = []
        for short_type in self._writer.types:
            present = self._present[short_type]
            held = self._writer.ids(short_type)
            removals.extend((short_type, object_id, None) for object_id in held if not present.get(object_id))
        self.written += self._writer.write(removals)
        return self.written
