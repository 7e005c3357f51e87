"""Anti-entropy digests: a compact, order-independent summary of one hub's objects of one type.

A digest is ``(count, hash)``: how many rows the manager should hold, and the XOR of one 64-bit *row hash* per row.
XOR makes it independent of order and lets both sides keep it up to date one change at a time: a row that changes
XORs its old hash out and its new one in. (Rows of one type and hub have unique keys, so no two equal row hashes
cancel each other by accident; a collision of 64-bit SHA-256 prefixes is not a practical concern.)

The agent keeps it beside its inventory (``agent_tasks/inventory.py``); the manager computes the same over its rows
in SQL from a generated column (``globalhub/manager/digests.py``), so the two must agree bit for bit:

* **hybrid types** (managed clusters, policies): a row is an object, its hash SHA-256(id as 16 UUID bytes ‖ the
  object's 16-byte payload digest)[:8], where the payload digest is SHA-256(the object's JSON as the manager stores
  it)[:16] (``globalhub.manager.ingest.bulk.payload_digest``);
* **compliance**: a row is one (policy, cluster, status), its hash SHA-256(policy id as 16 UUID bytes ‖
  MD5(``<cluster name>/<status>`` in UTF-8))[:8], the status as the manager stores it (``compliant``,
  ``non_compliant``, ``pending``, ``unknown``). (MD5 because it is the one hash PostgreSQL computes over text in an
  expression it may store: ``convert_to`` and ``textsend`` are not immutable. Kubernetes names hold no ``/``.)

Hashes are signed 64-bit integers (PostgreSQL's ``bigint``); on the wire, 16 hex digits of the unsigned value.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from globalhub.protocol.events import EXT_DIGEST

COMPLIANCE_FIELDS: Mapping[str, str] = {
    "compliantClusters": "compliant",
    "nonCompliantClusters": "non_compliant",
    "unknownComplianceClusters": "unknown",
    "pendingComplianceClusters": "pending",
}


def payload_digest(payload: bytes) -> bytes:
    """16 bytes of SHA-256 of an object's JSON, exactly as the manager keeps in ``payload_digest``."""
    return hashlib.sha256(payload).digest()[:16]


def _signed(first8: bytes) -> int:
    return int.from_bytes(first8, "big", signed=True)


def _uuid_bytes(value: str) -> bytes | None:
    try:
        return uuid.UUID(value).bytes
    except ValueError:
        return None  # the manager keeps no row for it (an object without a usable id)


def object_row_hash(object_id: str, digest: bytes) -> int | None:
    """The row hash of a hybrid object: its UUID and its payload digest (None: no row for a non-UUID id)."""
    key = _uuid_bytes(object_id)
    return None if key is None else _signed(hashlib.sha256(key + digest).digest()[:8])


def compliance_row_hash(policy_id: str, cluster: str, status: str) -> int | None:
    """The row hash of one (policy, cluster, status) compliance row (None: no row for a non-UUID policy id)."""
    key = _uuid_bytes(policy_id)
    if key is None:
        return None
    named = hashlib.md5(f"{cluster}/{status}".encode(), usedforsecurity=False).digest()
    return _signed(hashlib.sha256(key + named).digest()[:8])


def compliance_rows(entry: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """The (policy, cluster, status) rows one compliance entry becomes on the manager (one per listed cluster)."""
    policy_id = str(entry.get("policyId", ""))
    for field, status in COMPLIANCE_FIELDS.items():
        for cluster in entry.get(field) or ():
            yield policy_id, str(cluster), status


@dataclass(frozen=True, slots=True)
class Digest:
    count: int = 0
    hash: int = 0  # signed 64-bit XOR of the row hashes

    def with_rows(self, count: int, row_hash: int) -> Digest:
        return Digest(self.count + count, _xor64(self.hash, row_hash))

    def without_rows(self, count: int, row_hash: int) -> Digest:
        return Digest(self.count - count, _xor64(self.hash, row_hash))

    def plus(self, other: Digest) -> Digest:
        """The digest of both sets of rows (disjoint: different keys)."""
        return self.with_rows(other.count, other.hash)

    @property
    def hex(self) -> str:
        return f"{self.hash & 0xFFFFFFFFFFFFFFFF:016x}"

    @classmethod
    def of(cls, row_hashes: Iterable[int | None]) -> Digest:
        """The digest of these rows (None: no row)."""
        total = cls()
        for row_hash in row_hashes:
            if row_hash is not None:
                total = total.with_rows(1, row_hash)
        return total

    @classmethod
    def parse(cls, count: Any, hex_hash: Any) -> Digest:
        """From the wire; ``ValueError`` when either part is not what a digest holds."""
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"a digest's count must be a non-negative integer, not {count!r}")
        if not isinstance(hex_hash, str) or len(hex_hash) != 16 or not all(c in _HEX for c in hex_hash):
            raise ValueError(f"a digest's hash must be 16 hex digits, not {hex_hash!r}")
        unsigned = int(hex_hash, 16)
        return cls(count, unsigned - (1 << 64) if unsigned >= 1 << 63 else unsigned)


def _xor64(a: int, b: int) -> int:
    unsigned = (a ^ b) & 0xFFFFFFFFFFFFFFFF
    return unsigned - (1 << 64) if unsigned >= 1 << 63 else unsigned


def entry_digest_of_object(object_id: str, payload: bytes) -> Digest:
    """What one hybrid object adds to its type's digest."""
    return Digest.of([object_row_hash(object_id, payload_digest(payload))])


def entry_digest_of_compliance(entry: Mapping[str, Any]) -> Digest:
    """What one compliance entry (one policy with its clusters) adds to the digest: one row per listed cluster."""
    return Digest.of(compliance_row_hash(*row) for row in compliance_rows(entry))


_HEX = frozenset("0123456789abcdefABCDEF")
MAX_DIGESTS = 16  # types one heartbeat may carry digests of


def digest_extension(digests: Mapping[str, Digest]) -> dict[str, str]:
    """The ``ghdigest`` extension a heartbeat carries: ``<short type>:<count>:<hash>`` per type, ``;``-separated.

    Upstream managers ignore extensions they do not know, so the digests ride with the heartbeat at no cost to them.
    """
    if not digests:
        return {}
    return {EXT_DIGEST: ";".join(f"{name}:{digest.count}:{digest.hex}" for name, digest in sorted(digests.items()))}


def read_digests(extensions: Mapping[str, str]) -> dict[str, Digest]:
    """The digests a heartbeat carries (none without ``ghdigest``); ``ValueError`` saying what is wrong otherwise."""
    raw = extensions.get(EXT_DIGEST)
    if raw is None:
        return {}
    parts = raw.split(";")
    if len(parts) > MAX_DIGESTS:
        raise ValueError(f"{EXT_DIGEST} carries {len(parts)} digests, at most {MAX_DIGESTS} are read")
    digests: dict[str, Digest] = {}
    for part in parts:
        fields = part.split(":")
        if len(fields) != 3 or not fields[1].isdigit() or len(fields[1]) > 12:
            raise ValueError(f"{EXT_DIGEST} part {part[:80]!r} is not <type>:<count>:<hash>")
        try:
            digests[fields[0]] = Digest.parse(int(fields[1]), fields[2])
        except ValueError as error:
            raise ValueError(f"{EXT_DIGEST} part {part[:80]!r}: {error}") from None
    return digests
