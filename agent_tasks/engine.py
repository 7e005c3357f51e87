"""The agent's resync engine: startup, the 1-second queue drain, and the periodic delta/resync scheduler.

Celery tasks call these methods and nothing else (``agent_tasks/tasks.py``). Rules:

* **Startup** resets this hub's versions to ``0.0`` (the manager sees Generation 0 and resets its slots), moves
  every change-log cursor to the log's end (the startup resyncs cover what came before) and queues every
  resyncable type.
* **Drain** pops one type and sends its full state, at most one type per second (from start to start). Only one
  drain runs at a time (a lease, ``agent_tasks/lease.py``); the popped type stays in flight until it is sent, so
  a drain that dies leaves it for the next tick to put back at the head of the queue. A failed resync is retried
  with backoff (1 s, doubling, at most 60 s); one whose inventory a source is still listing goes back in the queue
  (a partial inventory sent as whole would make the manager sweep what is not there yet). A drain that popped
  schedules the next one for exactly a second after its start, and a new request nudges an idle agent at once, so
  the queue moves at one type per second without waiting for beat's next tick (which remains the safety net).
* **Sync** checks every type: a delta (or heartbeat) when ``NextSyncAt`` passed, a queued full resync when
  ``NextResyncAt`` passed. ``Next…At`` is the last time plus the interval read at that moment, so an interval
  changed at run time applies at once.
* Sends of one type never interleave: each holds the type's lease. Leases last seconds and are renewed while
  their work runs, so a crashed process holds up nothing for long.
* **Settle**, every tick: the queue repairs itself (``ResyncQueue.settle``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta

import redis

from agent_tasks.emitter import Emitter, SendReport
from agent_tasks.intervals import RESYNC_PREFIX, Intervals
from agent_tasks.inventory import Cursor, Inventory
from agent_tasks.lease import LEASE_SECONDS, Lease, lease_prefix
from agent_tasks.resync_queue import ResyncQueue
from agent_tasks.state import StateStore, TypeState
from agent_tasks.telemetry import ERROR_RESYNC, ERROR_SYNC
from agent_tasks.types import DIGEST_TYPES, RESYNC_ORDER, STATUS_TYPES, Kind, StatusType, status_type
from agent_tasks.versions import VersionStore

log = logging.getLogger(__name__)

RESYNCABLE = tuple(name for name, kind in STATUS_TYPES.items() if kind.resyncable)

DRAIN_WAIT_SECONDS = 30.0  # how long a drain waits for a delta of the same type to finish
DRAIN_SPACING = 1.0  # one queued type per second, as upstream's 1-second ticker
# Beat's ticks come about a second apart, a little early or late. Without slack, a 1 s interval checked at ticks
# 0.98 s apart would be due only every other tick (2 s). A send due within this much of a tick goes at that tick.
DUE_SLACK = 0.25
# A time this agent stored that lies further ahead than this: the wall clock was stepped back past it (NTP, an
# operator). Counting from it would hold everything up until the clock caught up again, so it counts as now.
CLOCK_STEP = 2.0


@dataclass
class TickResult:
    sent: list[SendReport]
    queued: list[str]
    skipped_busy: list[str]


class Agent:
    def __init__(
        self,
        hub: str,
        client: redis.Redis,
        inventory: Inventory,
        versions: VersionStore,
        state: StateStore,
        queue: ResyncQueue,
        intervals: Intervals,
        emitter: Emitter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.hub = hub
        self._redis = client
        self.inventory = inventory
        self.versions = versions
        self.state = state
        self.queue = queue
        self.intervals = intervals
        self.emitter = emitter
        self._clock = clock

    # --- startup -----------------------------------------------------------------------------------------------

    def start(self) -> list[str]:
        """An agent start: versions back to 0.0, cursors to the end of the change logs, every type queued.

        The types are queued in the manager's order; a queue left from the previous run is replaced (its types
        are all among them).
        """
        now = self._clock()
        self.versions.reset_all()
        self.state.reset()
        for name in STATUS_TYPES:
            self.state.update(name, cursor=str(Cursor.at(self.inventory.log_position(name))))
        for name in RESYNC_ORDER:
            self.state.update(name, last_resync=now)
        self.queue.clear()  # whatever waited is queued again below, in upstream's order
        self.queue.push(RESYNC_ORDER, now=now)
        log.info("hub=%s agent started: versions reset to 0.0, queued %s", self.hub, ", ".join(RESYNC_ORDER))
        return list(RESYNC_ORDER)

    # --- the 1-second drain ------------------------------------------------------------------------------------

    def drain(self) -> SendReport | None:
        """Pop one queued type and send its full state; a failure retries it later. None when idle, busy or too soon.

        At most one type starts per ``DRAIN_SPACING`` (one second), counted from the previous start, whoever asks:
        beat's tick, the follow-up a drain schedules (:meth:`next_drain_in`), or a new request's nudge.
        """
        lease = self._lease("drain")
        if not lease.acquire():
            return None
        try:
            self.queue.recover()  # the lease is ours: whatever is in flight was left by a drain that died
            now = self._clock()
            if self._since_last_start(now) < DRAIN_SPACING:
                return None
            item = self.queue.pop(owner=lease.owner, now=now)
            if item is None:
                return None
            self._redis.set(self._last_start_key, repr(now))
            return self._resync(item.type, item.waited(now))
        finally:
            lease.release()

    def next_drain_in(self) -> float | None:
        """Settle the queue (``ResyncQueue.settle``); seconds until the next type may start, None when nothing waits."""
        now = self._clock()
        if self.queue.settle(self._lease_key("drain"), RESYNCABLE, now=now) == 0:
            return None
        return max(0.0, DRAIN_SPACING - self._since_last_start(now))

    @property
    def _last_start_key(self) -> str:
        return f"gh:{self.hub}:agent:drain_started"

    def _since_last_start(self, now: float) -> float:
        raw = self._redis.get(self._last_start_key)
        if raw is None or stepped_back(float(raw), now):
            return float("inf")
        return now - float(raw)

    def _resync(self, name: str, waited: float) -> SendReport | None:
        kind = status_type(name)
        try:
            if not kind.resyncable:
                log.warning("hub=%s %s cannot be resynced; dropped from the queue", self.hub, kind.short)
                return None
            if self.inventory.filling(kind.short):
                log.info("hub=%s resync of %s waits: its inventory is being listed from the hub", self.hub, kind.short)
                self.queue.push([kind.short])
                return None
            return self._send_resync(kind, waited)
        finally:
            self.queue.done(kind.short)

    def _send_resync(self, kind: StatusType, waited: float) -> SendReport | None:
        log.info("hub=%s resync of %s starts after %.1fs in the queue", self.hub, kind.short, waited)
        requested_at = self._clock() - waited
        answers = self.queue.answers(kind.short)
        try:
            with self._type_lease(kind, wait=DRAIN_WAIT_SECONDS):
                report = self.emitter.full_resync(kind, answers)
        except Exception as error:
            self._failed(kind, ERROR_RESYNC, error)
            retry = self.queue.retry_later(kind.short, now=self._clock())
            log.warning(
                "hub=%s resync of %s failed %d time(s) in a row; next try in %.0fs",
                self.hub,
                kind.short,
                retry.attempts,
                retry.at - self._clock(),
            )
            return None
        self.queue.answered(kind.short, answers)
        self.queue.succeeded(kind.short)
        self.state.clear_error(kind.short)
        self.emitter.recorder.observe_resync(kind.short, self._clock() - requested_at)
        return report

    # --- the periodic scheduler --------------------------------------------------------------------------------

    def sync(self) -> TickResult:
        """Run whatever delta sync, heartbeat or periodic resync is due now."""
        now = self._clock()
        intervals = self.intervals.snapshot()
        states = self.state.all()
        result = TickResult([], [], [])
        for kind in STATUS_TYPES.values():
            state = states.get(kind.short, TypeState())
            if kind.resyncable and stepped_back(state.last_resync, now):
                self.state.update(kind.short, last_resync=now)  # the next periodic resync counts from now
            elif kind.resyncable and _due(state.last_resync, intervals[RESYNC_PREFIX + kind.short], now):
                self.request_resync([kind.short], now=now)
                result.queued.append(kind.short)
            if _due(state.last_sync, intervals[kind.short], now) or stepped_back(state.last_sync, now):
                self._sync_one(kind, now, result)
        return result

    def _sync_one(self, kind: StatusType, now: float, result: TickResult) -> None:
        try:
            with self._type_lease(kind, wait=None):
                self.state.update(kind.short, last_sync=now)
                report = self._heartbeat(kind) if kind.kind is Kind.HEARTBEAT else self.emitter.delta(kind)
        except _Busy:
            result.skipped_busy.append(kind.short)  # a resync of this type is running; it covers the changes
            return
        except Exception as error:
            self._failed(kind, ERROR_SYNC, error)
            return
        if report is None:
            return
        if report.lost_changes:
            self.request_resync([kind.short], now=now)
            result.queued.append(kind.short)
        else:
            self.state.clear_error(kind.short)
        result.sent.append(report)

    def _heartbeat(self, kind: StatusType) -> SendReport:
        """The heartbeat, with the anti-entropy digest of every type whose lease is free.

        Each digest must describe what the manager holds once it has read everything sent before the heartbeat. So
        the type's lease is taken (and kept until the heartbeat is confirmed: no send of the type may come between),
        the change log's end and the digest are read together, and a delta up to that end goes first. A type whose
        lease is taken (a resync or delta runs) or whose delta fails is left out this time.
        """
        with ExitStack() as held:
            digests = {}
            for name in DIGEST_TYPES:
                lease = self._lease(f"type:{name}")
                if not lease.acquire():
                    continue
                held.enter_context(lease)
                position, digest = self.inventory.digest_at(name)
                try:
                    report = self.emitter.delta(status_type(name), until=position)
                except Exception as error:
                    log.warning(
                        "hub=%s no digest of %s with this heartbeat: its delta failed: %s", self.hub, name, error
                    )
                    continue
                if report is None or not report.lost_changes:
                    digests[name] = digest
            return self.emitter.heartbeat(kind, digests)

    # --- requests ----------------------------------------------------------------------------------------------

    def request_resync(self, names: list[str], now: float | None = None) -> int:
        """Queue full resyncs (the manager's request, a schedule, an operator); returns how many were added."""
        when = self._clock() if now is None else now
        kinds = [status_type(name) for name in names]
        for kind in kinds:
            self.state.update(kind.short, last_resync=when)
        return self.queue.push([kind.short for kind in kinds if kind.resyncable], now=when)

    # --- helpers -----------------------------------------------------------------------------------------------

    def _failed(self, kind: StatusType, what: str, error: Exception) -> None:
        """A sync or resync failed: logged, kept for ``ctl status``, counted in the metrics (the emitter's recorder,
        ``globalhub_agent_errors_total{kind="sync"|"resync"}``)."""
        log.error("hub=%s type=%s %s failed: %s", self.hub, kind.short, what, error)
        self.state.record_error(kind.short, f"{what}: {error}", self._clock())
        self.emitter.recorder.count_error(what)

    def _lease_key(self, name: str) -> str:
        return lease_prefix(self.hub) + name

    def _lease(self, name: str) -> Lease:
        return Lease(self._redis, self._lease_key(name), seconds=LEASE_SECONDS)

    @contextmanager
    def _type_lease(self, kind: StatusType, wait: float | None) -> Iterator[None]:
        lease = self._lease(f"type:{kind.short}")
        if not lease.acquire(wait=wait):
            raise _Busy(kind.short)
        with lease:
            yield


class _Busy(Exception):
    """The type's lock is held by another send."""


def _due(last: float | None, interval: timedelta, now: float) -> bool:
    return last is None or now + DUE_SLACK >= last + interval.total_seconds()


def stepped_back(last: float | None, now: float) -> bool:
    """Whether ``last``, a time stored by this agent, lies ahead of ``now``: the wall clock was stepped back."""
    return last is not None and last > now + CLOCK_STEP
