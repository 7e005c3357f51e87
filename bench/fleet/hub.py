"""One emulated hub: its inventory, versions, resync queue and the agent's own ``Emitter``.

The hub does what the agent's engine (``agent_tasks/engine.py``) does, on memory instead of Redis and leases:

* :meth:`FleetHub.start`: versions back to ``0.0``, change-log cursors to the end, every resync type queued in the
  manager's order (``Agent.start``);
* :meth:`FleetHub.drain_one`: pop one type and send its full state with the requests it answers
  (``Agent.drain``); the caller spaces the calls one second apart, start to start;
* :meth:`FleetHub.sync`: a delta of every type that changed (``Agent.sync`` at a common interval);
* :meth:`FleetHub.heartbeat`: deltas up to the digests' position, then the heartbeat with the digests
  (``Agent._heartbeat``);
* :meth:`FleetHub.on_spec_message`: the agent's own ``handle_spec_message``.

Sends of one hub never interleave (one lock per hub, where the agent holds a lease per type).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent_tasks.emitter import Emitter, SendMode, SendReport
from agent_tasks.inventory import Cursor
from agent_tasks.listen_spec import Outcome, handle_spec_message
from agent_tasks.telemetry import Recorder
from agent_tasks.types import DIGEST_TYPES, HEARTBEAT, RESYNC_ORDER, STATUS_TYPES, Kind, status_type
from bench.fleet.memory import MemoryInventory, MemoryQueue, MemoryState, MemoryVersions
from globalhub.protocol.digest import Digest
from globalhub.protocol.kafka import ConfirmedProducer

log = logging.getLogger(__name__)

DELTA_TYPES = tuple(name for name, kind in STATUS_TYPES.items() if kind.kind is not Kind.HEARTBEAT)


@dataclass
class HubCounters:
    """What one hub sent, for the fleet's progress lines."""

    resyncs: int = 0
    deltas: int = 0
    heartbeats: int = 0
    messages: int = 0
    bytes: int = 0
    failures: int = 0
    last_resync_at: float = 0.0  # wall time of the last confirmed full resync

    def add(self, report: SendReport) -> None:
        self.messages += report.messages
        self.bytes += report.bytes
        if report.what == "resync":
            self.resyncs += 1
            self.last_resync_at = time.time()
        elif report.what == "delta":
            self.deltas += 1
        else:
            self.heartbeats += 1


@dataclass
class FleetHub:
    """A hub of the fleet. ``producer`` is shared by every hub of a process (one librdkafka client)."""

    name: str
    topic: str
    producer: ConfirmedProducer
    digests: bool = True
    send_mode: SendMode = SendMode.BATCH
    clock: Callable[[], float] = time.time
    recorder: Recorder = field(default_factory=Recorder)
    counters: HubCounters = field(default_factory=HubCounters)

    def __post_init__(self) -> None:
        self.inventory = MemoryInventory(self.name, digests=self.digests)
        self.versions = MemoryVersions()
        self.state = MemoryState()
        self.queue = MemoryQueue()
        self.emitter = Emitter(
            self.name,
            self.topic,
            self.inventory,
            self.versions,
            self.state,
            self.producer,
            send_mode=self.send_mode,
            clock=self.clock,
            recorder=self.recorder,
        )
        self._sending = threading.Lock()

    def start(self, *, resync: bool = True) -> list[str]:
        """An agent start (``Agent.start``): versions 0.0, cursors at the logs' ends, and (unless ``resync`` is
        False: a hub that waits for the manager's request) the four types queued."""
        now = self.clock()
        self.versions.reset_all()
        self.state.reset()
        for name in STATUS_TYPES:
            self.state.update(name, cursor=str(Cursor.at(self.inventory.log_position(name))))
        self.queue.clear()
        if not resync:
            return []
        self.queue.push(RESYNC_ORDER, now=now)
        return list(RESYNC_ORDER)

    def drain_one(self) -> SendReport | None:
        """Pop one type and send its full state (``Agent._send_resync``); None when nothing waits.

        A failed send puts the type back at the tail (the agent retries it after a backoff); the caller's
        one-second spacing is the backoff here.
        """
        item = self.queue.pop(now=self.clock())
        if item is None:
            return None
        kind = status_type(item.type)
        answers = self.queue.answers(kind.short)
        try:
            with self._sending:
                report = self.emitter.full_resync(kind, answers)
        except Exception as error:
            self.counters.failures += 1
            log.warning("hub=%s resync of %s failed, queued again: %s", self.name, kind.short, error)
            self.queue.push([kind.short])
            return None
        self.queue.answered(kind.short, answers)
        self.counters.add(report)
        return report

    def sync(self) -> list[SendReport]:
        """A delta of each type with changes (complete types: their whole state), as the agent's periodic tick.

        A failed delta leaves its cursor where it was, so the next call sends the same changes again.
        """
        reports: list[SendReport] = []
        for name in DELTA_TYPES:
            try:
                with self._sending:
                    report = self.emitter.delta(status_type(name))
            except Exception as error:
                self.counters.failures += 1
                log.warning("hub=%s delta of %s failed: %s", self.name, name, error)
                continue
            if report is not None and report.lost_changes:
                self.queue.push([name])
            elif report is not None:
                self.counters.add(report)
                reports.append(report)
        return reports

    def heartbeat(self) -> SendReport | None:
        """The heartbeat with each type's digest, after a delta up to the digest's position (``Agent._heartbeat``),
        so each digest describes what the manager holds once it read what came before. None when it failed."""
        try:
            with self._sending:
                report = self.emitter.heartbeat(HEARTBEAT, self._digests_with_deltas())
        except Exception as error:
            self.counters.failures += 1
            log.warning("hub=%s heartbeat failed: %s", self.name, error)
            return None
        self.counters.add(report)
        return report

    def _digests_with_deltas(self) -> dict[str, Digest]:
        digests: dict[str, Digest] = {}
        if not self.digests:
            return digests
        for name in DIGEST_TYPES:
            position, digest = self.inventory.digest_at(name)
            try:
                report = self.emitter.delta(status_type(name), until=position)
            except Exception as error:
                log.warning("hub=%s no digest of %s with this heartbeat: its delta failed: %s", self.name, name, error)
                continue
            if report is None or not report.lost_changes:
                digests[name] = digest
            if report is not None and not report.lost_changes:
                self.counters.add(report)
        return digests

    def on_spec_message(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]] | None
    ) -> Outcome:
        """What the agent's spec listener does with one message: filter, note the request id, queue the types."""
        return handle_spec_message(key, value, headers, self.name, self.queue)
