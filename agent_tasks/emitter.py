"""Turns the inventory into status bundles and sends them, confirmed by Kafka's delivery report.

Versions follow upstream: every change counts one ``Incr`` (Value), every confirmed send one ``Next``
(Generation). A version is stored only after Kafka confirmed the send, so a failed send is simply retried from the
same point: its changes stay in the change log, the cursor does not move, nothing is lost. Callers hold the type's
lock, so no two sends of one type interleave.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from agent_tasks.inventory import ChangeBatch, Cursor, Inventory, LogPosition
from agent_tasks.state import StateStore
from agent_tasks.telemetry import ERROR_SEND, Recorder, SendTiming
from agent_tasks.types import HUB_INFO, HUB_INFO_KEY, Kind, StatusType
from agent_tasks.versions import VersionStore
from globalhub.protocol import jsonutil
from globalhub.protocol.bundles import Frame, ObjectMetadata, dumps, frame_complete, frame_resync, pack
from globalhub.protocol.codec import OutgoingMessage, encode
from globalhub.protocol.digest import Digest, digest_extension
from globalhub.protocol.events import EXT_SEND_MODE, EXT_VERSION
from globalhub.protocol.kafka import ConfirmedProducer
from globalhub.protocol.requests import answers_extension
from globalhub.protocol.version import Version

log = logging.getLogger(__name__)

Payload = tuple[bytes, dict[str, str | int]]  # a message body and the extensions that go with it
DELTA_BATCH = 5000  # changes read from the log per round; a delta send loops until the log is drained
DELTA_READ_CHUNK = 250  # objects of a delta read from the inventory at a time


class SendMode(StrEnum):
    BATCH = "batch"  # one bundle holds many changes (split at 800 KiB)
    SINGLE = "single"  # one CloudEvent per change, all with the same extversion (upstream's single mode)


@dataclass
class SendReport:
    type: str
    what: str  # resync / delta / heartbeat
    objects: int = 0
    messages: int = 0
    bytes: int = 0
    version: str = ""
    seconds: float = 0.0
    lost_changes: bool = False  # the change log was trimmed past our cursor: a full resync is needed


class Emitter:
    def __init__(
        self,
        hub: str,
        topic: str,
        inventory: Inventory,
        versions: VersionStore,
        state: StateStore,
        producer: ConfirmedProducer,
        *,
        send_mode: SendMode = SendMode.BATCH,
        before_send: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
        recorder: Recorder | None = None,
    ) -> None:
        self.hub = hub
        self.topic = topic
        self.inventory = inventory
        self.versions = versions
        self.state = state
        self.producer = producer
        self.send_mode = send_mode
        self._before_send = before_send
        self._clock = clock
        self.recorder = recorder or Recorder()

    # --- full resync -------------------------------------------------------------------------------------------

    def full_resync(self, status_type: StatusType, answers: Sequence[str] = ()) -> SendReport:
        """Send the whole state of a type. Raises ``DeliveryFailed`` when Kafka did not confirm all of it.

        ``answers``: the ids of the manager's requests it answers, carried by every message (``ghrequests``); every
        message carries ``ghanswersnamed`` too, so a resync that answers none is never taken for an answer.
        """
        started = time.monotonic()
        short = status_type.short
        position = self.inventory.log_position(short)  # before listing: later changes go out as deltas
        version = self.versions.get(short)
        # Count the changes this state covers that no delta counted yet, as upstream counts every change when it
        # happens: two full states with one version then hold the same content. (A resync retried after changes
        # made while Kafka was down would otherwise repeat the failed attempt's version with other content, and
        # the manager, taking the retry for a copy, would keep rows the retry no longer lists.)
        pending = position.added - Cursor.parse(self.state.get(short).cursor).count
        for _ in range(max(pending, 0)):
            version.incr()
        report = SendReport(short, "resync", version=str(version))
        if status_type.kind is Kind.HYBRID:
            payloads = _framed(frame_resync(self._hybrid_objects(status_type, report)))
        else:
            payloads = self._complete_state(status_type, report)
        extra = answers_extension(answers)
        report.messages = self._send(report, self._messages(status_type, payloads, version, report, extra))
        self._sent(short, version, self._clock(), report)
        self.state.update(short, cursor=str(Cursor.at(position)), last_resync=self._clock())
        self.inventory.trim_through(short, Cursor.at(position))
        report.seconds = time.monotonic() - started
        log.info(
            "hub=%s type=%s resync sent: %d objects in %d messages, %d bytes, version %s, %.0f ms",
            self.hub,
            short,
            report.objects,
            report.messages,
            report.bytes,
            report.version,
            report.seconds * 1000,
        )
        return report

    def _hybrid_objects(self, status_type: StatusType, report: SendReport) -> Iterator[tuple[ObjectMetadata, bytes]]:
        assert status_type.tweak is not None
        for object_id, raw in self.inventory.list_encoded(status_type.short):
            obj = status_type.tweak(jsonutil.loads(raw), self.hub)
            report.objects += 1
            yield status_type.metadata(obj, object_id), dumps(obj)

    def _complete_entries(self, short: str, report: SendReport) -> Iterator[bytes]:
        for _, raw in self.inventory.list_encoded(short):
            report.objects += 1
            yield raw

    def _complete_state(self, status_type: StatusType, report: SendReport) -> Iterator[Payload]:
        """The whole state of a complete type: framed entries, or the hub-info object.

        Hub info is one small object, sent unframed exactly as upstream, and not at all until the hub knows it.
        """
        if status_type.short != HUB_INFO.short:
            return _framed(frame_complete(self._complete_entries(status_type.short, report)))
        (raw,) = self.inventory.get_encoded(HUB_INFO.short, [HUB_INFO_KEY])
        if raw is None:
            return iter(())
        report.objects = 1
        return iter([(raw, {})])

    def _messages(
        self,
        status_type: StatusType,
        payloads: Iterator[Payload],
        version: Version,
        report: SendReport,
        extra: Mapping[str, str] | None = None,
    ) -> Iterator[OutgoingMessage]:
        for payload, frame_extensions in payloads:
            report.bytes += len(payload)
            extensions: dict[str, str | int] = {EXT_VERSION: str(version), **frame_extensions, **(extra or {})}
            yield encode(event_type=status_type.event_type, source=self.hub, data=payload, extensions=extensions)

    # --- delta sync --------------------------------------------------------------------------------------------

    def delta(self, status_type: StatusType, until: LogPosition | None = None) -> SendReport | None:
        """Send what changed since the last confirmed send (up to ``until``, default: all); None when nothing did."""
        if status_type.kind is Kind.HYBRID:
            return self._hybrid_delta(status_type, until)
        return self._complete_delta(status_type, until)

    def _hybrid_delta(self, status_type: StatusType, end: LogPosition | None = None) -> SendReport | None:
        short = status_type.short
        started = time.monotonic()
        report: SendReport | None = None
        until = end or self.inventory.log_position(short)
        while True:
            cursor = Cursor.parse(self.state.get(short).cursor)
            batch = self.inventory.changes_since(short, cursor, until, DELTA_BATCH)
            if batch.lost:
                return self._lost(short, until)
            if not batch.entries:
                break
            report = report or SendReport(short, "delta")
            self._send_hybrid_changes(status_type, batch, report)
            next_cursor = cursor.after(batch)
            self.state.update(short, cursor=str(next_cursor))
            self.inventory.trim_through(short, next_cursor)
        if report is not None:
            report.seconds = time.monotonic() - started
            log.info(
                "hub=%s type=%s delta sent: %d changed objects in %d messages, version %s",
                self.hub,
                short,
                report.objects,
                report.messages,
                report.version,
            )
        return report

    def _send_hybrid_changes(self, status_type: StatusType, batch: ChangeBatch, report: SendReport) -> None:
        short = status_type.short
        latest: dict[str, str] = {}
        for _, object_id, op in batch.entries:  # coalesce per object, keeping the order of each last change
            latest.pop(object_id, None)
            latest[object_id] = op
        deletes: list[bytes] = []  # complete once the updates are consumed
        updates = self._changed_objects(status_type, latest, deletes)
        version = self.versions.get(short)
        for _ in batch.entries:
            version.incr()
        mode: dict[str, str | int] = {EXT_SEND_MODE: self.send_mode.value}
        payloads = ((payload, mode) for payload in self._delta_payloads(updates, deletes))
        report.messages += self._send(report, self._messages(status_type, payloads, version, report))
        report.objects += len(latest)
        self._sent(short, version, self._clock(), report)

    def _changed_objects(
        self, status_type: StatusType, latest: dict[str, str], deletes: list[bytes]
    ) -> Iterator[bytes]:
        """The current state of each changed object, read and encoded a chunk at a time (a delta of thousands of
        objects never holds them all); objects gone since their change was logged are added to ``deletes``."""
        assert status_type.tweak is not None
        ids = list(latest)
        for start in range(0, len(ids), DELTA_READ_CHUNK):
            chunk = ids[start : start + DELTA_READ_CHUNK]
            upsert_ids = [object_id for object_id in chunk if latest[object_id] != "delete"]
            current = dict(zip(upsert_ids, self.inventory.get_encoded(status_type.short, upsert_ids), strict=True))
            for object_id in chunk:
                raw = current.get(object_id)
                if raw is None:  # deleted, or gone again since the change was logged
                    deletes.append(dumps(ObjectMetadata(object_id).to_json()))
                else:
                    yield dumps(status_type.tweak(jsonutil.loads(raw), self.hub))

    def _delta_payloads(self, updates: Iterable[bytes], deletes: list[bytes]) -> Iterator[bytes]:
        if self.send_mode is SendMode.SINGLE:
            yield from (b'{"update":[' + item + b"]}" for item in updates)
            yield from (b'{"delete":[' + item + b"]}" for item in deletes)
            return
        yield from pack(updates, "update")
        yield from pack(deletes, "delete")

    def _complete_delta(self, status_type: StatusType, end: LogPosition | None = None) -> SendReport | None:
        """A complete type sends its whole state when anything changed since the last confirmed send."""
        short = status_type.short
        until = end or self.inventory.log_position(short)
        cursor = Cursor.parse(self.state.get(short).cursor)
        changes = until.added - cursor.count
        if changes <= 0:
            return None
        started = time.monotonic()
        version = self.versions.get(short)
        for _ in range(changes):
            version.incr()
        report = SendReport(short, "delta")
        payloads = self._complete_state(status_type, report)
        # A whole state that answers no request: it says so, or the manager could take it for an answer.
        extra = answers_extension(())
        report.messages = self._send(report, self._messages(status_type, payloads, version, report, extra))
        self._sent(short, version, self._clock(), report)
        self.state.update(short, cursor=str(Cursor.at(until)))
        self.inventory.trim_through(short, Cursor.at(until))
        report.seconds = time.monotonic() - started
        log.info(
            "hub=%s type=%s full state sent after %d changes: %d entries in %d messages, version %s",
            self.hub,
            short,
            changes,
            report.objects,
            report.messages,
            report.version,
        )
        return report

    def _lost(self, short: str, until: LogPosition) -> SendReport:
        """Changes were trimmed from the log before they were sent: jump to its end; a full resync repairs."""
        log.warning(
            "hub=%s type=%s change log was trimmed past the last sent change; full resync needed", self.hub, short
        )
        self.state.update(short, cursor=str(Cursor.at(until)))
        return SendReport(short, "delta", lost_changes=True)

    # --- heartbeat ---------------------------------------------------------------------------------------------

    def heartbeat(self, status_type: StatusType, digests: Mapping[str, Digest] | None = None) -> SendReport:
        """The heartbeat, with the anti-entropy digests given (``ghdigest``, see ``globalhub/protocol/digest.py``)."""
        version = self.versions.get(status_type.short)
        extensions: dict[str, str | int] = {EXT_VERSION: str(version), **digest_extension(digests or {})}
        message = encode(event_type=status_type.event_type, source=self.hub, data=b"[]", extensions=extensions)
        report = SendReport(status_type.short, "heartbeat")
        report.messages = self._send(report, iter([message]))
        self._sent(status_type.short, version, self._clock(), report)
        return report

    # --- common ------------------------------------------------------------------------------------------------

    def _send(self, report: SendReport, messages: Iterator[OutgoingMessage]) -> int:
        """Send and wait for Kafka's confirmation; the send's latency and bundle sizes, or its failure, are recorded."""
        timing = SendTiming(messages)
        try:
            self._before_send()
            sent = self.producer.send(self.topic, timing.messages())
        except Exception:
            if not timing.build_failed:
                self.recorder.count_error(ERROR_SEND)
            raise
        self.recorder.observe_send(report.type, report.what, timing.latency(), timing.sizes)
        return sent

    def _sent(self, short: str, version: Version, now: float, report: SendReport) -> None:
        """After a confirmed send: the version sent was ``version``; the next send is one Generation later."""
        report.version = str(version)
        version.next()
        self.versions.set(short, version)
        self.state.count_sent(short, report.messages, now)


def _framed(frames: Iterator[Frame]) -> Iterator[Payload]:
    for frame in frames:
        yield frame.payload, frame.extensions()
