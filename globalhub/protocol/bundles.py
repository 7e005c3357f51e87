"""Bundle payloads (upstream's GenericBundle shape) and the framing of a full resync.

A GenericBundle is a JSON object with optional arrays ``create``, ``update``, ``delete``, ``resync`` and
``resync_metadata`` (upstream ``pkg/bundle/generic/generic_bundle.go``); empty arrays are left out.

A full resync is a framed sequence of bundles that all carry the same ``extresyncid`` and ``extversion``:

* ``begin`` (seq 0) and ``chunk`` frames carry ``resync`` objects,
* the metadata frames carry ``resync_metadata`` (the id of every object that exists),
* the last frame is ``complete``: it carries ``extframetotal`` (number of frames) and ``extobjectcount``.

The receiver soft-deletes what a resync did not list only when every frame ``0 .. total-1`` arrived and the ids
add up to the count. No frame's payload exceeds :data:`MAX_BUNDLE_BYTES`. When everything fits, the sequence is
exactly what an upstream agent sends (``resync`` frames, then one ``resync_metadata`` frame); an empty inventory is
still a ``begin`` + ``complete`` pair, which upstream cannot express.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from globalhub.protocol import jsonutil
from globalhub.protocol.events import (
    EXT_FRAME,
    EXT_FRAME_SEQ,
    EXT_FRAME_TOTAL,
    EXT_OBJECT_COUNT,
    EXT_RESYNC_ID,
)

MAX_BUNDLE_BYTES: Final = 800 * 1024

_BUNDLE_KEYS: Final = ("create", "update", "delete", "resync", "resync_metadata")
_METADATA_FIELDS: Final = ("id", "ns", "name", "group", "version", "kind", "inventory_begin", "complete")


class BundleError(ValueError):
    """A payload that does not have the shape its type requires. ``str()`` is the dead-letter reason."""


class ObjectTooLarge(BundleError):
    """One object alone is bigger than a bundle may be."""


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, the one encoding used for every payload."""
    return jsonutil.dumps(value)


@dataclass(frozen=True, slots=True)
class ObjectMetadata:
    id: str
    name: str | None = None
    namespace: str | None = None

    def to_json(self) -> dict[str, str]:
        entry = {"id": self.id}
        if self.namespace:
            entry["ns"] = self.namespace
        if self.name:
            entry["name"] = self.name
        return entry


class FrameKind(StrEnum):
    BEGIN = "begin"
    CHUNK = "chunk"
    COMPLETE = "complete"


@dataclass(frozen=True, slots=True)
class Frame:
    """One message of a framed resync: its payload and the CloudEvent extensions that place it."""

    resync_id: str
    kind: FrameKind
    seq: int
    payload: bytes
    total: int | None = None
    object_count: int | None = None

    def extensions(self) -> dict[str, str | int]:
        ext: dict[str, str | int] = {
            EXT_RESYNC_ID: self.resync_id,
            EXT_FRAME: self.kind.value,
            EXT_FRAME_SEQ: self.seq,
        }
        if self.total is not None:
            ext[EXT_FRAME_TOTAL] = self.total
        if self.object_count is not None:
            ext[EXT_OBJECT_COUNT] = self.object_count
        return ext


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """Framing extensions read back from a received event."""

    resync_id: str
    kind: FrameKind
    seq: int
    total: int | None
    object_count: int | None

    @classmethod
    def from_extensions(cls, extensions: Mapping[str, str]) -> FrameInfo | None:
        """None for an unframed (upstream) bundle; :class:`BundleError` when framing is present but broken."""
        resync_id = extensions.get(EXT_RESYNC_ID)
        if resync_id is None:
            return None
        if not _RESYNC_ID.fullmatch(resync_id):
            raise BundleError(f"{EXT_RESYNC_ID} must be 1-64 letters, digits, '.', '_', ':' or '-'")
        try:
            kind = FrameKind(extensions.get(EXT_FRAME, ""))
        except ValueError:
            raise BundleError(f"{EXT_FRAME} must be one of begin/chunk/complete") from None
        seq = _non_negative(extensions, EXT_FRAME_SEQ, required=True)
        assert seq is not None
        total = _non_negative(extensions, EXT_FRAME_TOTAL, required=kind is FrameKind.COMPLETE)
        count = _non_negative(extensions, EXT_OBJECT_COUNT, required=kind is FrameKind.COMPLETE)
        if kind is FrameKind.BEGIN and seq != 0:
            raise BundleError("a begin frame must have sequence number 0")
        if kind is FrameKind.COMPLETE and total is not None and seq != total - 1:
            raise BundleError(f"complete frame has sequence {seq} but says there are {total} frames")
        return cls(resync_id, kind, seq, total, count)


FRAME_NUMBER_MAX = 2**31 - 2  # sequence numbers, totals and counts fit a 32-bit column, even plus one
_RESYNC_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def _non_negative(extensions: Mapping[str, str], name: str, *, required: bool) -> int | None:
    text = extensions.get(name)
    if text is None:
        if required:
            raise BundleError(f"{name} is required on this frame")
        return None
    # isascii: str.isdigit also accepts digits such as '²' that int() then rejects with a plain ValueError.
    if not (text.isascii() and text.isdigit()) or len(text) > 12 or int(text) > FRAME_NUMBER_MAX:
        raise BundleError(f"{name} {text[:40]!r} is not an integer from 0 to {FRAME_NUMBER_MAX}")
    return int(text)


@dataclass(slots=True)
class _FrameBuffer:
    """Accumulates pre-encoded array items until the next one would pass the size limit.

    With a ``key`` the payload is ``{"<key>": [...]}``, without one it is a bare JSON array.
    """

    key: str | None
    limit: int
    items: list[bytes] = field(default_factory=list)
    size: int = 0

    def overhead(self) -> int:
        return len(b"[]") if self.key is None else len(b'{"":[]}') + len(self.key)

    def fits(self, item: bytes) -> bool:
        separator = 1 if self.items else 0
        return self.overhead() + self.size + separator + len(item) <= self.limit

    def add(self, item: bytes) -> None:
        self.size += len(item) + (1 if self.items else 0)
        self.items.append(item)

    def payload(self) -> bytes:
        array = b"[" + b",".join(self.items) + b"]"
        if self.key is None:
            return array
        if not self.items:
            return b"{}"
        return b'{"' + self.key.encode() + b'":' + array + b"}"

    def take(self) -> bytes:
        payload = self.payload()
        self.items = []
        self.size = 0
        return payload


def pack(items: Iterable[bytes], key: str | None, *, limit: int = MAX_BUNDLE_BYTES) -> Iterator[bytes]:
    """Pack encoded array items into as few payloads as fit ``limit``; yields nothing for no items.

    Raises :class:`ObjectTooLarge` for an item that cannot fit a payload on its own.
    """
    buffer = _FrameBuffer(key, limit)
    for item in items:
        if not buffer.fits(item):
            if buffer.items:
                yield buffer.take()
            if not buffer.fits(item):  # checked again on the empty buffer: it may not fit even alone
                raise ObjectTooLarge(f"an item of {len(item)} bytes is more than a bundle may hold ({limit})")
        buffer.add(item)
    if buffer.items:
        yield buffer.take()


def frame_resync(
    objects: Iterable[tuple[ObjectMetadata, bytes]],
    *,
    limit: int = MAX_BUNDLE_BYTES,
    resync_id: str | None = None,
) -> Iterator[Frame]:
    """Frame a full resync of a hybrid type from ``(metadata, encoded object)`` pairs.

    Objects are streamed (only their ids are kept). Raises :class:`ObjectTooLarge` for an object or id entry that
    cannot fit a frame on its own.
    """
    resync_id = resync_id or uuid.uuid4().hex
    metadata: list[bytes] = []
    current = ""

    def encoded_objects() -> Iterator[bytes]:
        nonlocal current
        for meta, encoded in objects:
            current = meta.id
            metadata.append(dumps(meta.to_json()))
            yield encoded

    seq = 0
    try:
        for payload in pack(encoded_objects(), "resync", limit=limit):
            yield Frame(resync_id, _kind_for(seq), seq, payload)
            seq += 1
    except ObjectTooLarge as error:
        raise ObjectTooLarge(f"object {current}: {error}") from None
    if seq == 0:
        yield Frame(resync_id, FrameKind.BEGIN, 0, b"{}")
        seq = 1
    listings = list(pack(metadata, "resync_metadata", limit=limit)) or [b'{"resync_metadata":[]}']
    yield from _numbered(resync_id, listings, first_seq=seq, object_count=len(metadata))


def frame_complete(
    entries: Iterable[bytes], *, limit: int = MAX_BUNDLE_BYTES, resync_id: str | None = None
) -> Iterator[Frame]:
    """Frame the full state of a complete type (a JSON array of entries) into arrays of at most ``limit`` bytes.

    A state that fits one message is a single ``complete`` frame (seq 0, total 1), whose payload is exactly the
    array an upstream agent sends; the manager applies the state only once every frame has arrived.
    """
    resync_id = resync_id or uuid.uuid4().hex
    count = 0

    def counted() -> Iterator[bytes]:
        nonlocal count
        for entry in entries:
            count += 1
            yield entry

    payloads = list(pack(counted(), None, limit=limit)) or [b"[]"]
    yield from _numbered(resync_id, payloads, first_seq=0, object_count=count)


def _numbered(resync_id: str, payloads: list[bytes], *, first_seq: int, object_count: int) -> Iterator[Frame]:
    """Frames for ``payloads`` from ``first_seq`` on; the last is ``complete`` and carries the totals."""
    total = first_seq + len(payloads)
    for index, payload in enumerate(payloads):
        seq = first_seq + index
        if seq == total - 1:
            yield Frame(resync_id, FrameKind.COMPLETE, seq, payload, total=total, object_count=object_count)
        else:
            yield Frame(resync_id, _kind_for(seq), seq, payload)


def _kind_for(seq: int) -> FrameKind:
    return FrameKind.BEGIN if seq == 0 else FrameKind.CHUNK


@dataclass(slots=True)
class GenericBundle:
    """A parsed GenericBundle: full objects in ``update``/``resync`` (``create`` folded into ``update``)."""

    update: list[dict[str, Any]] = field(default_factory=list)
    delete: list[ObjectMetadata] = field(default_factory=list)
    resync: list[dict[str, Any]] = field(default_factory=list)
    resync_metadata: list[ObjectMetadata] | None = None  # None: the bundle has no resync_metadata key

    def is_empty(self) -> bool:
        return not (self.update or self.delete or self.resync or self.resync_metadata)


def parse_generic_bundle(data: Any) -> GenericBundle:
    """Validate the shape of a decoded GenericBundle; raise :class:`BundleError` saying what is wrong."""
    if not isinstance(data, dict):
        raise BundleError(f"a generic bundle must be a JSON object, got {_json_kind(data)}")
    unknown = sorted(set(data) - set(_BUNDLE_KEYS))
    if unknown:
        raise BundleError(f"unknown bundle keys {unknown[:5]}")
    bundle = GenericBundle()
    for key in ("create", "update", "resync"):
        items = _array(data, key)
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise BundleError(f"{key}[{index}] must be an object, got {_json_kind(item)}")
        (bundle.resync if key == "resync" else bundle.update).extend(items)
    bundle.delete = [_metadata(entry, "delete", i) for i, entry in enumerate(_array(data, "delete"))]
    if "resync_metadata" in data:
        entries = _array(data, "resync_metadata")
        bundle.resync_metadata = [_metadata(entry, "resync_metadata", i) for i, entry in enumerate(entries)]
    return bundle


def _array(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BundleError(f"{key} must be an array, got {_json_kind(value)}")
    return value


def _metadata(entry: Any, key: str, index: int) -> ObjectMetadata:
    if not isinstance(entry, dict):
        raise BundleError(f"{key}[{index}] must be an object, got {_json_kind(entry)}")
    for name in _METADATA_FIELDS:
        if name not in entry:
            continue
        if name in ("inventory_begin", "complete"):
            if not isinstance(entry[name], bool):  # upstream's Go bools: anything else fails to unmarshal there
                raise BundleError(f"{key}[{index}].{name} must be a boolean")
        elif not isinstance(entry[name], str):
            raise BundleError(f"{key}[{index}].{name} must be a string")
    return ObjectMetadata(id=entry.get("id") or "", name=entry.get("name"), namespace=entry.get("ns"))


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(type(value), "number")
