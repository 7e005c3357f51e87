"""Hybrid types (managed clusters, local policy specs): deltas and framed full resyncs on one stream.

* ``update`` (and ``create``) and ``resync`` objects are upserted, which clears ``deleted_at``;
* ``delete`` entries soft-delete by id, or by namespace and name when the id is unusable, as upstream does; the
  objects the same bundle upserts stay live (deleted, then created again: upstream ends with them deleted), and an
  id-less delete still takes the row of an old id of that namespace and name;
* every write carries the bundle's stamp, and a row holding newer content is left alone (see ``admission.py``);
* ``resync_metadata`` lists every object that exists: rows are marked with the resync's id, and once the resync
  is *completely* received (every frame, ids adding up to the announced count) the hub's unmarked rows are
  soft-deleted. A resync with a missing frame deletes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone

from globalhub.manager.ingest import bulk
from globalhub.manager.ingest.admission import Stamp
from globalhub.manager.ingest.records import Rejected, StatusEvent
from globalhub.manager.models import ResyncProgress
from globalhub.protocol.bundles import (
    BundleError,
    FrameInfo,
    FrameKind,
    GenericBundle,
    ObjectMetadata,
    dumps,
    parse_generic_bundle,
)
from globalhub.protocol.objects import canonical_uuid

log = logging.getLogger(__name__)

IdOf = Callable[[dict[str, Any]], str | None]
NameOf = Callable[[dict[str, Any]], str | None]


@dataclass(frozen=True)
class HybridType:
    table: bulk.ObjectTable
    id_of: IdOf
    name_of: NameOf


@dataclass
class HybridResult:
    upserted: int = 0
    deleted: int = 0
    skipped_objects: int = 0
    swept: int = 0
    stale: int = 0  # objects and deletes left alone: the rows hold newer content
    offered: int = 0  # objects and deletes the bundle carried
    incomplete_reason: str = ""
    abandoned_reason: str = ""  # a resync still being received was given up for this one
    full_state: int | None = None  # a complete listing was applied: how many objects it listed
    progress: ResyncProgress | None = None  # the (hub, type) resync bookkeeping as this record left it
    marks: list[tuple[str, list[str]]] = field(default_factory=list)  # (resync mark, ids given it), in order


@dataclass
class SlotMemory:
    """What one batch's transaction knows of a (hub, hybrid type) without asking the database again.

    The pipeline calls :meth:`keep` once a record's savepoint is released and :meth:`forget` when it was rolled
    back, so the memory only ever holds what the database holds (this transaction has locked those rows).
    """

    seen: bulk.FirstSight | None = None  # the hub had no rows of the type when the batch began
    progress: ResyncProgress | None = None  # the locked ResyncProgress row, once read or written
    progress_read: bool = False  # ``progress`` is what the database holds (None: no row), no need to ask
    mark: str = ""
    marked: set[str] = field(default_factory=set)  # ids whose rows carry resync mark ``mark``

    def keep(self, result: HybridResult) -> None:
        if result.progress is not None:
            self.progress, self.progress_read = result.progress, True
        for mark, ids in result.marks:
            if mark != self.mark:
                self.mark, self.marked = mark, set()
            self.marked.update(ids)

    def forget(self) -> None:
        self.progress, self.progress_read = None, False
        self.mark, self.marked = "", set()

    def stored_progress(self, event: StatusEvent) -> ResyncProgress | None:
        """The (hub, type) resync bookkeeping, locked: from memory once read, else from the database."""
        if not self.progress_read and self.progress is None:
            self.progress = (
                ResyncProgress.objects.select_for_update().filter(hub_id=event.hub, event_type=event.type).first()
            )
            self.progress_read = True
        return self.progress

    def marked_with(self, mark: str) -> set[str]:
        return self.marked if mark == self.mark else set()


@dataclass(frozen=True)
class HybridWork:
    """A hybrid bundle made ready for the database: its bundle and the rows of its objects (no database needed)."""

    bundle: GenericBundle
    rows: list[bulk.ObjectRow]
    skipped: int  # objects without a usable id
    resync_objects: bool = False  # it carried ``resync`` objects: full-state content, not a delta


def prepare_hybrid(kind: HybridType, event: StatusEvent) -> HybridWork:
    """Parse a hybrid bundle into rows. Raises :class:`Rejected` for a payload of the wrong shape.

    Pure computation: the pipeline runs it for the next record while the database works on the current one.
    """
    try:
        bundle = parse_generic_bundle(event.parsed)
    except BundleError as error:
        raise Rejected(f"bad bundle shape: {error}", hub=event.hub, event_type=event.type) from None
    # Upstream's order: ``resync``, then ``create``, then ``update`` (``create`` is folded into ``update`` in its
    # order). An object in more than one list ends with its last copy: an update wins over the resync copy.
    objects = bundle.resync + bundle.update
    try:
        rows, skipped = _rows(kind, objects)
    except ValueError as error:  # an object JSON cannot hold again (nested too deeply)
        raise Rejected(f"an object cannot be stored: {error}", hub=event.hub, event_type=event.type) from None
    resync_objects = bool(bundle.resync)
    bundle.update.clear()  # the objects live on as rows; their parsed form is no longer needed
    bundle.resync.clear()
    return HybridWork(bundle, rows, skipped, resync_objects)


def apply_hybrid(
    kind: HybridType,
    event: StatusEvent,
    work: HybridWork,
    stamp: Stamp,
    *,
    force: bool = False,
    memory: SlotMemory | None = None,
    meanwhile: bulk.Meanwhile | None = None,
) -> HybridResult:
    """Apply one admitted, prepared hybrid bundle; ``meanwhile`` runs while the database takes in its rows.

    Its rows are written with ``stamp``, over older rows only unless ``force`` (an authoritative bundle).
    ``memory``: what the batch already knows of this (hub, type); see :class:`SlotMemory`.
    """
    memory = memory or SlotMemory()
    bundle = work.bundle
    now = timezone.now()
    result = HybridResult()
    frame = event.frame
    progress = _resync_progress(event, frame, now, result, memory) if frame else None
    if frame is not None and progress is None:
        return result  # a frame of a resync already applied (redelivered): nothing to do twice
    mark = progress.resync_id if progress is not None and progress.outcome == ResyncProgress.Outcome.RECEIVING else ""
    if mark == "":
        mark = _receiving_mark(event, memory)
    result.skipped_objects = work.skipped
    upserted = bulk.upsert_objects(
        kind.table, event.hub, work.rows, now, mark, stamp, force=force, meanwhile=meanwhile, seen=memory.seen
    )
    result.upserted, result.stale = upserted.written, upserted.stale
    if mark:
        result.marks.append((mark, [row.object_id for row in work.rows]))
    deleted = _apply_deletes(kind, event.hub, work, now, stamp, force)
    result.deleted, result.stale = deleted.deleted, result.stale + deleted.stale
    result.offered = len(work.rows) + len(bundle.delete)
    if bundle.resync_metadata is not None:
        _apply_listing(kind, event, bundle.resync_metadata, frame, progress, now, result, memory, stamp, force)
    if progress is not None:
        progress.save()
        result.progress = progress
    if work.skipped:
        log.warning(
            "hub=%s type=%s version=%s skipped %d objects without a usable id",
            event.hub,
            event.type.short,
            event.version,
            work.skipped,
        )
    return result


def _rows(kind: HybridType, objects: list[dict[str, Any]]) -> tuple[list[bulk.ObjectRow], int]:
    rows = []
    skipped = 0
    for obj in objects:
        object_id = canonical_uuid(kind.id_of(obj))
        if object_id is None:
            skipped += 1
            continue
        rows.append(bulk.ObjectRow.of(object_id, kind.name_of(obj) or "", dumps(obj)))
    return rows, skipped


def _apply_deletes(
    kind: HybridType, hub: str, work: HybridWork, now: datetime, stamp: Stamp, force: bool
) -> bulk.Deleted:
    """Soft-delete what the bundle deletes, except objects it also upserts: deleted, then created again."""
    upserted_ids = {row.object_id for row in work.rows}
    ids = []
    names = []
    for entry in work.bundle.delete:
        object_id = canonical_uuid(entry.id)
        if object_id is not None:
            if object_id not in upserted_ids:
                ids.append(object_id)
        elif entry.name:
            names.append(((entry.namespace or "") if kind.table.namespace_sql else "", entry.name))
    by_id = bulk.soft_delete_ids(kind.table, hub, ids, now, stamp, force=force)
    # By name: every live row of that namespace and name goes, except objects this bundle upserts (one deleted and
    # created again, with its old or a new id, stays live; the row of the old id goes).
    by_name = bulk.soft_delete_names(kind.table, hub, names, now, stamp, force=force, keep=sorted(upserted_ids))
    return bulk.Deleted(by_id.deleted + by_name.deleted, by_id.stale + by_name.stale)


def _receiving_mark(event: StatusEvent, memory: SlotMemory) -> str:
    """A delta that arrives while a resync is being received is newer than that resync's listing: mark it too."""
    if memory.progress is not None or memory.progress_read:
        receiving = memory.progress is not None and memory.progress.outcome == ResyncProgress.Outcome.RECEIVING
        return memory.progress.resync_id if receiving and memory.progress is not None else ""
    progress = (
        ResyncProgress.objects.filter(hub_id=event.hub, event_type=event.type, outcome=ResyncProgress.Outcome.RECEIVING)
        .values_list("resync_id", flat=True)
        .first()
    )
    return progress or ""


def _resync_progress(
    event: StatusEvent, frame: FrameInfo, now: datetime, result: HybridResult, memory: SlotMemory
) -> ResyncProgress | None:
    """Advance the (hub, type) resync bookkeeping for one frame; None when the frame was already applied."""
    progress = memory.stored_progress(event)
    if frame.kind is FrameKind.BEGIN:
        if progress is not None and progress.resync_id == frame.resync_id:
            return None
        if progress is not None and progress.outcome == ResyncProgress.Outcome.RECEIVING:
            old, frames = progress.resync_id, progress.next_seq
            result.abandoned_reason = f"resync {old} abandoned after {frames} frames: {frame.resync_id} began"
        progress = progress or ResyncProgress(hub_id=event.hub, event_type=event.type)
        progress.resync_id = frame.resync_id
        progress.outcome = ResyncProgress.Outcome.RECEIVING
        progress.next_seq = 1
        progress.listed = 0
        progress.problem = ""
        progress.started_at = now
        progress.finished_at = None
        progress.deleted_count = 0
        return progress
    if progress is None or progress.resync_id != frame.resync_id:
        progress = progress or ResyncProgress(hub_id=event.hub, event_type=event.type)
        _start_incomplete(progress, frame, now, f"frames 0..{frame.seq - 1} of resync {frame.resync_id} missing")
        result.incomplete_reason = progress.problem
        return progress
    if frame.seq < progress.next_seq:
        return None
    if progress.outcome == ResyncProgress.Outcome.RECEIVING and frame.seq > progress.next_seq:
        progress.outcome = ResyncProgress.Outcome.INCOMPLETE
        progress.problem = f"frames {progress.next_seq}..{frame.seq - 1} missing"
        result.incomplete_reason = progress.problem
    progress.next_seq = frame.seq + 1
    return progress


def _start_incomplete(progress: ResyncProgress, frame: FrameInfo, now: datetime, problem: str) -> None:
    progress.resync_id = frame.resync_id
    progress.outcome = ResyncProgress.Outcome.INCOMPLETE
    progress.next_seq = frame.seq + 1
    progress.listed = 0
    progress.problem = problem
    progress.started_at = now
    progress.finished_at = None
    progress.deleted_count = 0


def _apply_listing(
    kind: HybridType,
    event: StatusEvent,
    listing: list[ObjectMetadata],
    frame: FrameInfo | None,
    progress: ResyncProgress | None,
    now: datetime,
    result: HybridResult,
    memory: SlotMemory,
    stamp: Stamp,
    force: bool,
) -> None:
    ids = [object_id for object_id in (canonical_uuid(entry.id) for entry in listing) if object_id is not None]
    if frame is None or progress is None:
        # Upstream agents send one unframed resync_metadata bundle that lists everything; an empty one means
        # nothing to upstream's manager either (it cannot tell "no objects" from "no listing").
        if ids:
            mark = f"u{event.event_id}"[:64]
            bulk.mark_listed(kind.table, event.hub, ids, mark)
            result.marks.append((mark, ids))
            result.swept = bulk.sweep_unlisted(kind.table, event.hub, mark, now, stamp, force=force)
            result.full_state = len(ids)
        return
    if progress.outcome == ResyncProgress.Outcome.RECEIVING:
        known = memory.marked_with(progress.resync_id)  # written by this resync's earlier frames: marked already
        bulk.mark_listed(kind.table, event.hub, [i for i in ids if i not in known], progress.resync_id)
        result.marks.append((progress.resync_id, ids))
    progress.listed += len(listing)
    if frame.kind is FrameKind.COMPLETE:
        _finish(kind, event, frame, progress, now, result, stamp, force)


def _finish(
    kind: HybridType,
    event: StatusEvent,
    frame: FrameInfo,
    progress: ResyncProgress,
    now: datetime,
    result: HybridResult,
    stamp: Stamp,
    force: bool,
) -> None:
    progress.finished_at = now
    if progress.outcome == ResyncProgress.Outcome.RECEIVING and progress.listed != frame.object_count:
        progress.outcome = ResyncProgress.Outcome.INCOMPLETE
        progress.problem = f"listed {progress.listed} objects but the resync announced {frame.object_count}"
    if progress.outcome != ResyncProgress.Outcome.RECEIVING:
        result.incomplete_reason = result.incomplete_reason or progress.problem
        return
    result.swept = bulk.sweep_unlisted(kind.table, event.hub, progress.resync_id, now, stamp, force=force)
    progress.outcome = ResyncProgress.Outcome.COMPLETED
    progress.deleted_count = result.swept
    result.full_state = progress.listed
    log.info(
        "hub=%s type=%s resync %s complete: %d listed, %d soft-deleted",
        event.hub,
        event.type.short,
        progress.resync_id,
        progress.listed,
        result.swept,
    )
