"""Ingest a batch of consumed status records in one transaction, together with the consumed positions.

A record either changes the manager's copy, is skipped as superseded (version admission, conflation), waits as a
frame of a larger state, or becomes a dead letter with its reason; in every case the partition moves on, in the
same transaction as the effect. Database trouble that is not about one record's data (connection lost, server
restarting) propagates: the caller rolls back, keeps its position and retries the batch.

Per (hub, type), records are handled in partition order: hybrid bundles are applied one by one, in order; of the
complete states in a batch only the newest admitted one is applied, at the end of the batch. Version admission and
the authority of full states that answer a request are decided in ``admission.py`` and ``answers.py``; how each
type is handled, in ``registry.py``. Positions are claimed and stored by ``positions.py``, dead letters written by
``deadletters.py``: this module orchestrates.

While a hub is inactive, its records take no effect but its heartbeats and its events: the resync that follows its
reactivation brings its state, and an old backlog never revives its rows; events are stored (no resync brings them
back, and they revive nothing). A hub the manager did not know (new, or deleted and
speaking again) gets a full resync request.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from globalhub.manager.answers import OpenRequests
from globalhub.manager.digests import DIGEST_TABLES
from globalhub.manager.divergence import Claim, check_digests
from globalhub.manager.ingest import bulk
from globalhub.manager.ingest.admission import Mode, Verdict
from globalhub.manager.ingest.bulk import FirstSight, Meanwhile, hubs_without_rows
from globalhub.manager.ingest.complete import CompleteKind, FrameBuffer, Incomplete, assemble, sent_time
from globalhub.manager.ingest.deadletters import dead_letter, refuses_the_data
from globalhub.manager.ingest.envelope import hub_of_record
from globalhub.manager.ingest.eventstreams import EventStream
from globalhub.manager.ingest.hybrid import HybridResult, SlotMemory, apply_hybrid
from globalhub.manager.ingest.observations import Observation, Stalled, save_observations
from globalhub.manager.ingest.opening import Lookahead, Opened
from globalhub.manager.ingest.positions import claim, store_positions
from globalhub.manager.ingest.records import Record, Rejected, StatusEvent
from globalhub.manager.ingest.registry import (
    APPLY_ORDER,
    COMPLETE_TYPES,
    HEALED_BY_NEXT_STATE,
    HYBRID_TYPES,
    MODES,
    RULES,
)
from globalhub.manager.ingest.totals import Outcome, Totals, save_totals
from globalhub.manager.ingest.versions import VersionBook
from globalhub.manager.lifecycle import HeartbeatSeen, Timing, heartbeats_seen, record_transition
from globalhub.manager.models import (
    Hub,
    HubTypeStatus,
    ResyncProgress,
    ResyncRequest,
)
from globalhub.manager.resync_requests import create_request
from globalhub.protocol.bundles import FrameKind
from globalhub.protocol.digest import Digest, read_digests
from globalhub.protocol.events import RESYNC_TYPES, EventType

log = logging.getLogger(__name__)

# A chunk run keeps its frames' rows until it commits (to apply them one by one if refused): this bounds that.
RUN_MAX_BYTES = 64 * 1024 * 1024


@dataclass
class BatchStats:
    applied: int = 0
    superseded: int = 0
    staged_frames: int = 0
    dead_letters: int = 0
    already_ingested: int = 0
    inactive: int = 0  # records of inactive hubs, which take no effect
    digests_agreed: int = 0  # anti-entropy digests that matched the rows
    digests_diverged: int = 0  # and those that did not (see ``globalhub/manager/divergence.py``)
    not_stored: int = 0  # records of types the registry accepts and counts without storing them
    by_type: dict[str, int] = field(default_factory=dict)
    totals: Totals = field(default_factory=Totals)  # bundles and rows per (type, outcome): IngestTotal

    def count(self, event: StatusEvent, rows: int) -> None:
        """A bundle took effect, writing ``rows`` objects."""
        self.applied += 1
        self.by_type[event.type.short] = self.by_type.get(event.type.short, 0) + 1
        self.totals.add(event.type, Outcome.STORED, rows)

    def count_not_stored(self, event: StatusEvent) -> None:
        self.not_stored += 1
        self.by_type[event.type.short] = self.by_type.get(event.type.short, 0) + 1
        self.totals.add(event.type, Outcome.NOT_STORED)


@dataclass
class _Pending:
    """A complete state offered to the batch: the newest admitted one per (hub, type) is applied at the end."""

    event: StatusEvent
    state: Any
    answers: set[int]  # the requests it answers


@dataclass
class _Batch:
    topic_prefix: str
    shared_topic: str
    versions: VersionBook
    requests: OpenRequests
    inactive: set[str]
    stats: BatchStats
    now: datetime
    hubs: list[str] = field(default_factory=list)  # every hub of the batch
    pending: dict[tuple[str, EventType], _Pending] = field(default_factory=dict)
    observed: dict[tuple[str, str], Observation] = field(default_factory=dict)
    heartbeats: dict[str, HeartbeatSeen] = field(default_factory=dict)
    slots: dict[tuple[str, EventType], SlotMemory] = field(default_factory=dict)
    frames: FrameBuffer = field(default_factory=FrameBuffer)
    stalled_states: set[tuple[str, EventType]] = field(default_factory=set)  # see HEALED_BY_NEXT_STATE
    last_offsets: dict[tuple[str, EventType], int] = field(default_factory=dict)  # of each slot's last record
    digests: dict[tuple[str, EventType], tuple[int, Digest]] = field(default_factory=dict)  # the last of each

    def note_digests(self, event: StatusEvent) -> None:
        """The anti-entropy digests a heartbeat carries (``ghdigest``), checked at the end of the batch."""
        try:
            claims = read_digests(event.extensions)
        except ValueError as error:
            rejected = Rejected(
                f"heartbeat applied, its digests ignored: {error}", hub=event.hub, event_type=event.type
            )
            _dead_letter(event.record, rejected, self.stats)
            return
        for short, digest in claims.items():
            try:
                kind = EventType.from_any(short)
            except ValueError:
                continue  # a type this manager keeps no digest of
            if kind in DIGEST_TABLES:
                self.digests[(event.hub, kind)] = (event.record.offset, digest)

    def memory(self, event: StatusEvent) -> SlotMemory:
        slot = (event.hub, event.type)
        if slot not in self.slots:
            self._remember(event.type, event.hub)
        return self.slots[slot]

    def _remember(self, kind: EventType, hub: str) -> None:
        """What the batch's transaction must know of every batch hub's ``kind`` at its first record of the kind,
        read for all of them at once: which hubs have no rows yet, and their resync bookkeeping (locked; only
        this consumer writes these hubs' rows, so the lock order cannot deadlock with another)."""
        hubs = sorted(name for name in {*self.hubs, hub} if (name, kind) not in self.slots)
        empty = hubs_without_rows(HYBRID_TYPES[kind].table, hubs)
        stored = ResyncProgress.objects.select_for_update().filter(hub_id__in=hubs, event_type=kind).order_by("hub_id")
        progress = {row.hub_id: row for row in stored}
        for name in hubs:
            seen = FirstSight() if name in empty else None
            self.slots[(name, kind)] = SlotMemory(seen=seen, progress=progress.get(name), progress_read=True)

    def applied(
        self, event: StatusEvent, verdict: Verdict, full_state: int | None, rows: int, *, whole: bool = True
    ) -> None:
        """A hybrid record took effect (writing ``rows`` objects): it goes into its slot, it counts, and it is
        observed."""
        self.versions.processed(event, verdict, self.now)
        self.stats.count(event, rows)
        self.observe(event, full_state, whole=whole)

    def observe(self, event: StatusEvent, full_state: int | None, *, whole: bool = True) -> None:
        """A record took effect; ``whole``: all of it (that restarts the refusal count and ends a stall)."""
        seen = self.observed.setdefault((event.hub, event.type.value), Observation())
        seen.version = str(event.version)
        if whole:
            seen.took_effect(event.record.offset)
        if full_state is None:
            seen.delta_at = self.now
        else:
            seen.full_state_at = self.now
            seen.full_state_objects = full_state

    def refused(self, event: StatusEvent, reason: str) -> None:
        """A bundle was refused, or some of its rows were (older than the row's): the slot may be stalling."""
        seen = self.observed.setdefault((event.hub, event.type.value), Observation())
        offset = event.record.offset
        seen.refuse(offset, f"version {event.version} at offset {offset}: {reason}"[:500])

    def heartbeat(self, event: StatusEvent) -> None:
        """A well-formed heartbeat was read: its time on the manager's side (the broker's, else now) and the hub's."""
        record = event.record
        broker_time = record.timestamp if record.log_append else None
        seen = HeartbeatSeen(broker_time or self.now, broker_time is not None, sent_time(event))
        known = self.heartbeats.get(event.hub)
        if known is None or seen.at >= known.at:
            self.heartbeats[event.hub] = seen


def ingest_batch(records: Sequence[Record], *, topic_prefix: str, shared_topic: str = "") -> BatchStats:
    """Apply ``records`` (in partition order) and store the positions after them, atomically.

    ``shared_topic``: the shared status topic, whose records speak for the hub their source names (none: "").
    """
    stats = BatchStats()
    if not records:
        return stats
    with transaction.atomic():
        fresh = claim(records)
        stats.already_ingested = len(records) - len(fresh)
        now = timezone.now()
        hubs = _register_hubs(fresh, topic_prefix, shared_topic, now)
        inactive = set(Hub.objects.filter(name__in=hubs, state=Hub.State.INACTIVE).values_list("name", flat=True))
        versions = VersionBook.load(hubs, MODES)
        batch = _Batch(topic_prefix, shared_topic, versions, OpenRequests.load(hubs), inactive, stats, now, hubs)
        batch.stalled_states = _stalled_states(hubs)
        _ingest_records(fresh, batch)
        _apply_complete_states(batch)
        batch.frames.flush()
        batch.versions.save()
        _heal_stalls(save_observations(batch.observed, now), batch)
        _check_digests(batch)
        batch.requests.save(now)
        _hub_lifecycle(batch)
        store_positions(fresh)
        save_totals(stats.totals)  # last: its rows are shared by every consumer, locked until the commit
    return stats


def _check_digests(batch: _Batch) -> None:
    """Compare each hub's last digest of a type with the rows, unless a later record of the type came after it in
    this batch (the rows then hold more than the digest describes: the next heartbeat's digest is checked)."""
    claims = [
        Claim(hub, kind, claimed, request_open=batch.requests.is_open(hub, kind.value))
        for (hub, kind), (offset, claimed) in sorted(batch.digests.items())
        if hub not in batch.inactive and batch.last_offsets.get((hub, kind), -1) <= offset
    ]
    for agreed in check_digests(claims, batch.now):
        if agreed:
            batch.stats.digests_agreed += 1
        else:
            batch.stats.digests_diverged += 1


def _ingest_records(records: Sequence[Record], batch: _Batch) -> None:
    """Each record in order; chunk frames of a first resync back to back go through one :class:`_ChunkRun`."""
    ahead = Lookahead(records, batch.topic_prefix, batch.shared_topic)
    run: _ChunkRun | None = None
    try:
        for opened in ahead:
            if opened.event is not None:
                batch.last_offsets[(opened.event.hub, opened.event.type)] = opened.record.offset
            if run is not None and run.takes(opened):
                run.add(opened)
                continue
            if run is not None:
                ended, run = run, None
                _end_run(ended, batch)
            run = _ChunkRun.start(opened, batch)
            if run is not None:
                continue
            _ingest_one(opened, batch, ahead.prepare_next)
    except BaseException:
        if run is not None:
            run.abort()  # never leave a COPY open behind an error: the transaction must roll back cleanly
        raise
    if run is not None:
        _end_run(run, batch)


def _end_run(run: _ChunkRun, batch: _Batch) -> None:
    for opened in run.finish():  # the database refused the run: each of its records on its own, as usual
        _ingest_one(opened, batch, None)


class _ChunkRun:
    """Chunk frames of one resync into a hub's empty table, back to back in the batch: one savepoint and one COPY
    for all of them, each frame's rows sent as soon as the frame is parsed, while the next one is.

    Only what the batch holds in memory decides that a frame may join (so no statement is needed while the COPY
    is open): a chunk with objects and nothing else, admitted, the next frame of the resync being received, of a
    hub that had no rows of the type when the batch began, with ids not written before. Its effect is what the
    records one by one would have had. Should the database refuse the run, the run is rolled back and
    :meth:`finish` hands its records back to be applied one by one, so a bad frame is the only dead letter.
    """

    def __init__(self, batch: _Batch, memory: SlotMemory, verdict: Verdict, first: Opened) -> None:
        assert first.event is not None and memory.progress is not None and memory.seen is not None
        self._batch = batch
        self._memory = memory
        self._verdict = verdict
        self._stamp = batch.versions.stamp_for(first.event, verdict, batch.now)
        self._progress = memory.progress
        self._seen = memory.seen
        self._hub, self._type = first.event.hub, first.event.type
        self._table = HYBRID_TYPES[first.event.type].table
        self._now = timezone.now()
        self._next_seq = self._progress.next_seq
        self._records: list[Opened] = []
        self._ids: list[str] = []
        self._bytes = 0
        self._refused: DatabaseError | None = None
        self._ended = False
        self._savepoint = transaction.atomic()
        self._savepoint.__enter__()
        self._copying = ExitStack()
        try:
            cursor = self._copying.enter_context(connection.cursor())
            statement = bulk.copy_new_statement(self._table)
            self._copy = self._copying.enter_context(bulk.copy_into(cursor, statement, flush_each_write=True))
        except BaseException:
            self.abort()
            raise
        self.add(first)

    @staticmethod
    def start(opened: Opened, batch: _Batch) -> _ChunkRun | None:
        """A run starting with ``opened``, if it may start one."""
        joinable = _joinable(opened, batch)
        if joinable is None or opened.event is None or opened.event.frame is None:
            return None
        memory, verdict = joinable
        if memory.progress is None or opened.event.frame.seq != memory.progress.next_seq:
            return None
        return _ChunkRun(batch, memory, verdict, opened)

    def takes(self, opened: Opened) -> bool:
        event = opened.event
        if self._refused is not None or event is None or event.frame is None or self._bytes >= RUN_MAX_BYTES:
            return False
        same = (event.hub, event.type) == (self._hub, self._type) and event.frame.seq == self._next_seq
        joinable = _joinable(opened, self._batch) if same else None
        return joinable is not None and joinable == (self._memory, self._verdict)

    def add(self, opened: Opened) -> None:
        event, work = opened.event, opened.work
        assert event is not None and event.frame is not None and work is not None
        self._records.append(opened)
        latest = {row.object_id: row for row in work.rows}
        self._seen.written.update(latest)
        self._ids.extend(latest)
        self._next_seq = event.frame.seq + 1
        if work.skipped:
            log.warning(
                "hub=%s type=%s skipped %d objects without a usable id", self._hub, self._type.short, work.skipped
            )
        lines = bulk.new_object_lines(self._hub, latest.values(), self._now, self._progress.resync_id, self._stamp)
        self._bytes += len(lines)
        try:
            with connection.wrap_database_errors:  # outside the COPY's own block: translate here, as it does
                self._copy.write(lines)
        except DatabaseError as error:  # the server may stop a COPY before its end
            if not refuses_the_data(error):
                self.abort()
                raise
            self._refused = error
            self.abort()

    def finish(self) -> list[Opened]:
        """Commit the run and do each record's bookkeeping; or, refused, give back the records to apply one by one."""
        if self._refused is None:
            try:
                self._copying.close()
                self._progress.next_seq = self._next_seq
                self._progress.save()
            except DatabaseError as error:
                self.abort()
                if not refuses_the_data(error):
                    raise
                self._refused = error
            except BaseException:
                self.abort()
                raise
            else:
                self._ended = True
                self._savepoint.__exit__(None, None, None)
        if self._refused is not None:
            log.info("a run of %d frames was refused (%s): applying them one by one", len(self._records), self._refused)
            self._memory.forget()
            return self._records
        self._memory.keep(HybridResult(progress=self._progress, marks=[(self._progress.resync_id, self._ids)]))
        for opened in self._records:
            assert opened.event is not None and opened.work is not None
            self._batch.applied(opened.event, self._verdict, None, len(opened.work.rows))
        return []

    def abort(self) -> None:
        """Roll the run back: end the COPY (ignoring its error) and leave the savepoint with an error. Once."""
        if self._ended:
            return
        self._ended = True
        error = RuntimeError("chunk run aborted")
        with suppress(Exception):  # the COPY's own error is already known, or the rollback tells the rest
            self._copying.__exit__(type(error), error, None)
        self._savepoint.__exit__(type(error), error, None)


def _joinable(opened: Opened, batch: _Batch) -> tuple[SlotMemory, Verdict] | None:
    """The (hub, type) memory and the verdict when ``opened`` is a chunk a :class:`_ChunkRun` may take (see there)."""
    memory = _receiving_chunk(opened, batch)
    if memory is None:
        return None
    event, work = opened.event, opened.work
    assert event is not None and work is not None and memory.seen is not None
    answering = batch.requests.answered_by(event, full_state=True)
    verdict = batch.versions.judge(event, answers_request=bool(answering))
    if not verdict.admitted or any(row.object_id in memory.seen.written for row in work.rows):
        return None
    return memory, verdict


def _receiving_chunk(opened: Opened, batch: _Batch) -> SlotMemory | None:
    """The slot's memory when ``opened`` is a well-formed chunk of objects only, of an active hub, for the resync
    its slot is receiving into an empty table."""
    event, work = opened.event, opened.work
    if event is None or work is None or opened.rejected is not None or opened.bad_payload is not None:
        return None
    frame, bundle = event.frame, work.bundle
    if event.hub in batch.inactive or frame is None or frame.kind is not FrameKind.CHUNK:
        return None
    if bundle.delete or bundle.resync_metadata is not None or not work.rows:
        return None
    memory = batch.slots.get((event.hub, event.type))
    if memory is None or memory.seen is None or memory.progress is None:
        return None
    progress = memory.progress
    receiving = progress.outcome == ResyncProgress.Outcome.RECEIVING and progress.resync_id == frame.resync_id
    return memory if receiving else None


def _hub_lifecycle(batch: _Batch) -> None:
    """Heartbeats read keep hubs alive, and a fresh one brings an inactive hub back. Same transaction; a fixed
    number of statements for all the batch's hubs (``lifecycle.heartbeats_seen``)."""
    heartbeats_seen(batch.heartbeats, batch.now, Timing.from_settings())


def _stalled_states(hubs: Sequence[str]) -> set[tuple[str, EventType]]:
    """The stalled (hub, type) slots of the batch's hubs that their next complete state heals."""
    rows = HubTypeStatus.objects.filter(
        hub_id__in=hubs, stalled_since__isnull=False, event_type__in=[t.value for t in HEALED_BY_NEXT_STATE]
    ).values_list("hub_id", "event_type")
    return {(hub, EventType(event_type)) for hub, event_type in rows}


def _heal_stalls(stalled: list[Stalled], batch: _Batch) -> None:
    """A type whose bundles keep being refused gets a resync request: its answer is authoritative.

    A type that becomes stalled is asked for unless a request already sent is on its way; one that stays stalled
    is asked again once every open request of the type is overdue (its answer may have been lost on the way).
    """
    overdue = settings.GLOBALHUB.resync_overdue
    for slot in stalled:
        hub, kind = slot.hub, EventType(slot.event_type)
        if kind not in RESYNC_TYPES:
            if slot.new:
                log.warning(
                    "hub=%s type=%s stalled (bundles keep being refused); no request can ask for it: its next "
                    "complete state will be admitted as authoritative",
                    hub,
                    kind.short,
                )
            continue
        owed = batch.requests.owed.get((hub, slot.event_type), {})
        waiting = sorted(
            request_id
            for request_id, r in owed.items()
            if batch.now - r.requested_at <= overdue and (r.sent_at is not None or not slot.new)
        )
        if waiting:
            if slot.new:
                log.warning("hub=%s type=%s stalled; resync request #%s is on its way", hub, kind.short, waiting[-1])
            continue
        late = sorted(request_id for request_id, r in owed.items() if batch.now - r.requested_at > overdue)
        request = create_request(hub, [kind], ResyncRequest.Reason.STALLED, "stall detector", batch.now)
        log.warning(
            "hub=%s type=%s stalled (bundles keep being refused): request #%s%s",
            hub,
            kind.short,
            request.pk,
            f" (overdue: #{', #'.join(map(str, late))})" if late else "",
        )


def _register_hubs(records: Sequence[Record], topic_prefix: str, shared_topic: str, now: datetime) -> list[str]:
    """The batch's hubs; one the manager does not know (new, or deleted and speaking again) is created and asked
    for its full state. Each hub's status topic is noted when it is the shared one (the probe reads its ends)."""
    spoken_on: dict[str, str] = {}  # hub -> "" (its own topic) or the shared topic, as last read
    for record in records:
        hub = hub_of_record(record, topic_prefix, shared_topic)
        if hub:
            spoken_on[hub] = record.topic if record.topic == shared_topic else ""
    names = sorted(spoken_on)
    if not names:
        return names
    known = dict(Hub.objects.filter(name__in=names).values_list("name", "status_topic"))
    for name, topic in spoken_on.items():
        if name in known and known[name] != topic:
            Hub.objects.filter(name=name).update(status_topic=topic)
    new = [name for name in names if name not in known]
    if new:
        Hub.objects.bulk_create([Hub(name=name, status_topic=spoken_on[name]) for name in new], ignore_conflicts=True)
        for name in new:
            request = create_request(name, None, ResyncRequest.Reason.FIRST_SEEN, "first seen", now)
            topic = spoken_on[name] or topic_prefix + name
            record_transition(
                name, now, "", Hub.State.ACTIVE, f"first seen on {topic}: resync request #{request.pk}", "consumer"
            )
            log.info("hub=%s first seen: resync request #%s", name, request.pk)
    return names


def _ingest_one(opened: Opened, batch: _Batch, meanwhile: Meanwhile | None) -> None:
    record = opened.record
    try:
        if opened.rejected is not None:
            raise opened.rejected
        event = opened.event
        assert event is not None
        rule = RULES.get(event.type)
        if rule is None:
            raise Rejected(
                f"event type {event.type.short} is not ingested by this manager", hub=event.hub, event_type=event.type
            )
        if event.hub in batch.inactive and not (rule.liveness or rule.mode is Mode.APPEND):
            batch.stats.inactive += 1  # its reactivation's resync brings what it says
            batch.stats.totals.add(event.type, Outcome.INACTIVE)
            return
        if rule.hybrid is not None:
            _apply_hybrid(opened, event, batch, meanwhile)
        elif rule.complete is not None:
            _offer_complete(event, batch)
        elif rule.events is not None:
            _store_events(rule.events, event, batch)
        else:
            batch.stats.count_not_stored(event)  # taken, counted, not stored (as upstream's manager drops it)
    except Rejected as rejected:
        _dead_letter(record, rejected, batch.stats)
    except DatabaseError as error:
        if not refuses_the_data(error):
            raise  # the database is in trouble, not this record: the caller retries the batch
        # The database refused this record's data: retrying cannot help, recording it does.
        known = opened.event
        hub, event_type = (known.hub, str(known.type)) if known is not None else ("", "")
        _dead_letter(
            record, Rejected(f"database rejected the data: {error}", hub=hub, event_type=event_type), batch.stats
        )


def _apply_hybrid(opened: Opened, event: StatusEvent, batch: _Batch, meanwhile: Meanwhile | None) -> None:
    work = opened.work
    full_state = event.frame is not None or (
        work is not None and (work.resync_objects or work.bundle.resync_metadata is not None)
    )
    answering = batch.requests.answered_by(event, full_state=full_state)
    verdict = batch.versions.judge(event, answers_request=bool(answering))
    if not verdict.admitted:
        _superseded(event, batch, verdict.reason)
        return
    if opened.bad_payload is not None:
        raise opened.bad_payload
    assert work is not None
    memory = batch.memory(event)
    stamp = batch.versions.stamp_for(event, verdict, batch.now)
    try:
        with transaction.atomic():  # a savepoint: a rejected record leaves no partial effect
            result = apply_hybrid(
                HYBRID_TYPES[event.type],
                event,
                work,
                stamp,
                force=verdict.authoritative,
                memory=memory,
                meanwhile=meanwhile,
            )
    except BaseException:
        memory.forget()  # the record's changes were rolled back: so is what the memory learnt from them
        raise
    memory.keep(result)
    if result.offered and result.stale == result.offered and result.full_state is None:
        batch.versions.processed(event, verdict, batch.now)
        _superseded(event, batch, f"every one of its {result.offered} objects is older than the row's", Outcome.REFUSED)
    else:
        batch.applied(event, verdict, result.full_state, result.offered - result.stale, whole=not result.stale)
        if result.stale:  # partly refused: a replay, a reordering, or rows a poisoned version holds
            batch.refused(event, f"{result.stale} of its {result.offered} objects are older than the row's")
    if result.full_state is not None:
        batch.requests.answer(event, answering)
    for problem in (result.abandoned_reason, result.incomplete_reason):
        if problem:
            rejected = Rejected(f"truncated resync: {problem}", hub=event.hub, event_type=event.type)
            _dead_letter(event.record, rejected, batch.stats)


def _store_events(stream: EventStream, event: StatusEvent, batch: _Batch) -> None:
    """Store an event bundle's events (each once); a bundle with an event that cannot be stored is a dead letter."""
    verdict = batch.versions.judge(event)
    rows = stream.rows(event, batch.now)
    with transaction.atomic():  # a savepoint: a rejected record leaves no partial effect
        stream.store(rows)
    batch.applied(event, verdict, None, len(rows))


def _offer_complete(event: StatusEvent, batch: _Batch) -> None:
    """Parse a complete state (assembling frames) and keep it if it is the newest admitted one of its slot."""
    kind = COMPLETE_TYPES[event.type]
    waiting = batch.frames.copy()  # assembly takes frames from the buffer: given back if the savepoint rolls back
    try:
        data, problem, state = _assemble_and_parse(event, kind, batch)
    except BaseException:
        batch.frames = waiting
        raise
    if problem:
        raise Rejected(f"truncated state: {problem}", hub=event.hub, event_type=event.type)
    if data is None:
        batch.stats.staged_frames += 1
        batch.stats.totals.add(event.type, Outcome.STAGED)
        return
    if RULES[event.type].liveness:
        batch.heartbeat(event)  # liveness, whatever its version says
        batch.note_digests(event)
    answering = batch.requests.answered_by(event, full_state=True)
    verdict = batch.versions.judge(event, answers_request=bool(answering))
    slot = (event.hub, event.type)
    if not verdict.admitted and slot in batch.stalled_states:
        # A stalled type no request can ask for: this whole state re-bases it, as an answer would.
        stored = batch.versions.last(event)
        verdict = batch.versions.judge(event, heals_stall=True)
        batch.stalled_states.discard(slot)
        log.warning(
            "hub=%s type=%s stalled: complete state %s admitted as authoritative over the stored version %s",
            event.hub,
            event.type.short,
            event.version,
            stored,
        )
    if not verdict.admitted:
        _superseded(event, batch, verdict.reason)
        return
    replaced = batch.pending.get(slot)
    if replaced is not None:
        batch.stats.superseded += 1  # conflation: a newer complete state of the same slot replaces it
        batch.stats.totals.add(event.type, Outcome.SUPERSEDED)
        answering = answering | replaced.answers  # a newer whole state answers what the one it replaces did
    batch.pending[slot] = _Pending(event, state, answering)
    batch.versions.processed(event, verdict, batch.now)


def _assemble_and_parse(event: StatusEvent, kind: CompleteKind, batch: _Batch) -> tuple[Any, str, Any]:
    """(data, "", state) once the state is whole; (None, "", None) while its frames are still coming; (None, why,
    None) when the set is truncated (the removal of its frames is kept). Raises :class:`Rejected` for a bad shape.
    """
    if event.frame is None or not kind.framed:
        return event.parsed, "", kind.parse(event.parsed, event)  # no database work: no savepoint needed
    with transaction.atomic():  # assembly takes the set's stored frames: a rejected state gives them back
        try:
            data = assemble(event, batch.frames)
        except Incomplete as incomplete:
            return None, str(incomplete), None
        if data is None:
            return None, "", None
        return data, "", kind.parse(data, event)


def _apply_complete_states(batch: _Batch) -> None:
    """The newest admitted state of each (hub, type), type by type in ``APPLY_ORDER``. A type that can apply many
    hubs' states at once does (one set of statements for the batch); should the database refuse that, each state
    is applied on its own, so the refused one is the only dead letter."""
    for event_type in APPLY_ORDER:
        pending = [waiting for (_, kind), waiting in batch.pending.items() if kind is event_type]
        if pending and _apply_together(COMPLETE_TYPES[event_type], pending, batch):
            for waiting in pending:
                _complete_state_applied(waiting, batch)
            continue
        for waiting in pending:
            _apply_complete_state(waiting, batch)


def _apply_together(kind: CompleteKind, pending: list[_Pending], batch: _Batch) -> bool:
    """Apply every state in one go, if the kind can; False when it cannot or the database refused the data."""
    if kind.apply_states is None:
        return False
    try:
        with transaction.atomic():
            kind.apply_states([(waiting.event, waiting.state) for waiting in pending], batch.versions)
    except DatabaseError as error:
        if not refuses_the_data(error):
            raise
        log.info(
            "%d %s states refused together, applied one by one: %s", len(pending), pending[0].event.type.short, error
        )
        return False
    return True


def _apply_complete_state(pending: _Pending, batch: _Batch) -> None:
    event = pending.event
    try:
        with transaction.atomic():
            problem = COMPLETE_TYPES[event.type].apply(event, pending.state, batch.versions)
    except DatabaseError as error:
        if not refuses_the_data(error):
            raise
        problem = f"database rejected the data: {error}"
    if problem:
        _dead_letter(event.record, Rejected(problem, hub=event.hub, event_type=event.type), batch.stats)
        return
    _complete_state_applied(pending, batch)


def _complete_state_applied(pending: _Pending, batch: _Batch) -> None:
    event, state = pending.event, pending.state
    objects = len(state) if isinstance(state, list) else 1
    batch.stats.count(event, objects)
    batch.observe(event, objects)
    batch.requests.answer(event, pending.answers)


def _superseded(event: StatusEvent, batch: _Batch, reason: str, outcome: Outcome = Outcome.SUPERSEDED) -> None:
    """A bundle taking no effect: its version was not admitted (``superseded``), or every object it carried is
    older than the row's (``refused``)."""
    batch.stats.superseded += 1
    batch.stats.totals.add(event.type, outcome)
    if not RULES[event.type].liveness:  # a heartbeat's version never matters: liveness took it already
        batch.refused(event, reason)
    log.info(
        "hub=%s type=%s version=%s refused (%s), offset %s",
        event.hub,
        event.type.short,
        event.version,
        reason,
        event.record.offset,
    )


def _dead_letter(record: Record, rejected: Rejected, stats: BatchStats) -> None:
    dead_letter(record, rejected)
    stats.dead_letters += 1
    stats.totals.add(rejected.event_type, Outcome.DEAD_LETTER)
