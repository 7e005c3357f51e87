"""Runs a share of the fleet in one process: seeding, the spec listener, each hub's loops, changes, progress.

One asyncio loop schedules every hub's drain, delta and heartbeat; the sends themselves (which block until Kafka
confirms them) run on a thread pool, sharing one producer. The spec listener is one consumer per process (its own
group, newest offsets first, as the agent's) on a thread, which hands each request to the hubs it names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from agent_tasks.emitter import SendMode
from agent_tasks.engine import DRAIN_SPACING
from bench.fleet.changes import DEFAULT_MIX, ChangeLog, ChangeMaker, SeededHub, Shape, seed_hub
from bench.fleet.hub import FleetHub
from bench.fleet.producer import SharedProducer
from globalhub.protocol.codec import InvalidEvent, decode
from globalhub.protocol.events import BROADCAST, RESYNC_EVENT_TYPE, status_topic
from globalhub.protocol.kafka import (
    SPEC_TOPIC_CONFIG,
    STATUS_TOPIC_CONFIG,
    ConfirmedProducer,
    KafkaSettings,
    ensure_topics,
    headers_of,
)

log = logging.getLogger("bench.fleet")
T = TypeVar("T")


@dataclass(frozen=True)
class FleetConfig:
    """Everything a fleet process needs; picklable, so it can be handed to spawned processes."""

    kafka: KafkaSettings
    hubs: int = 100
    hub_prefix: str = "fleet-"
    shape: Shape = field(default_factory=Shape)
    heartbeat: float = 60.0
    delta_interval: float = 5.0
    changes_per_second: float = 0.0
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    processes: int = 1
    status_prefix: str = "gh-status."
    spec_topic: str = "gh-spec"
    send_mode: SendMode = SendMode.BATCH
    send_timeout: float = 15.0
    senders: int = 32  # threads per process that wait for Kafka's confirmations
    digests: bool = True
    startup_resync: bool = True
    seed: int = 1
    change_tick: float = 0.1
    change_log: Path | None = None
    stats_interval: float = 10.0
    duration: float | None = None
    group_tag: str = "fleet"
    topic_batch: int = 200
    ready_file: Path | None = None  # written as <ready_file>.<process> once its spec listener is assigned

    def hub_names(self) -> list[str]:
        width = max(5, len(str(self.hubs - 1)))
        return [f"{self.hub_prefix}{index:0{width}d}" for index in range(self.hubs)]

    def share(self, index: int) -> list[str]:
        """The hubs process ``index`` plays: every ``processes``-th name, so each process gets an even share."""
        return self.hub_names()[index :: self.processes]

    def change_log_for(self, index: int) -> Path | None:
        if self.change_log is None or self.processes == 1:
            return self.change_log
        return self.change_log.with_name(f"{self.change_log.stem}.{index}{self.change_log.suffix}")


# --- topics ----------------------------------------------------------------------------------------------------


def create_topics(config: FleetConfig) -> None:
    """Every hub's status topic (1 partition, broker time stamps: ``STATUS_TOPIC_CONFIG``, as the agent creates its
    own) and the spec topic, in batches so one admin request never carries thousands of topics."""
    ensure_topics(config.kafka, [config.spec_topic], SPEC_TOPIC_CONFIG)
    topics = [status_topic(name, config.status_prefix) for name in config.hub_names()]
    for start in range(0, len(topics), config.topic_batch):
        batch = topics[start : start + config.topic_batch]
        ensure_topics(config.kafka, batch, STATUS_TOPIC_CONFIG, partitions=1, timeout=60.0)
        log.info("status topics %d-%d of %d ensured", start + 1, start + len(batch), len(topics))


# --- the spec listener -----------------------------------------------------------------------------------------


class SpecRouter:
    """Hands each ``Resync`` to the hubs it names (``broadcast``: all of this process's) through the agent's own
    ``handle_spec_message``; ``woken(hub)`` is called for each hub that got something queued."""

    def __init__(self, hubs: Sequence[FleetHub], woken: Callable[[FleetHub], None]) -> None:
        self._hubs = {hub.name: hub for hub in hubs}
        self._woken = woken
        self.requests = 0

    def route(self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]) -> int:
        """Returns how many hubs queued something. The message is decoded once to find its hubs; each hub then
        reads it as the agent does (so a malformed request is rejected by the agent's code, per hub)."""
        try:
            event = decode(key, value, headers)
        except InvalidEvent:
            return 0
        if event.type != RESYNC_EVENT_TYPE:
            return 0
        if event.subject == BROADCAST:
            targets: Iterable[FleetHub] = self._hubs.values()
        elif event.subject in self._hubs:
            targets = [self._hubs[event.subject]]
        else:
            return 0
        self.requests += 1
        woken = 0
        for hub in targets:
            if hub.on_spec_message(key, value, headers).queued:
                self._woken(hub)
                woken += 1
        return woken


class SpecListener(threading.Thread):
    """One consumer of the spec topic for the whole process."""

    def __init__(self, config: FleetConfig, group: str, router: SpecRouter) -> None:
        super().__init__(name="fleet-spec-listener", daemon=True)
        settings = config.kafka.client_config()
        settings.update({"group.id": group, "auto.offset.reset": "latest", "enable.auto.commit": True})
        self._consumer = Consumer(settings)
        self._topic = config.spec_topic
        self._router = router
        self.assigned = threading.Event()
        self._stopping = threading.Event()

    def run(self) -> None:
        self._consumer.subscribe([self._topic], on_assign=self._on_assign)
        try:
            while not self._stopping.is_set():
                message = self._consumer.poll(0.5)
                if message is not None:
                    self._handle(message)
        finally:
            self._consumer.close()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned.set()

    def _handle(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("spec consumer: %s", error)
            return
        woken = self._router.route(message.key(), message.value(), list(headers_of(message)))
        if woken:
            log.info("resync request queued on %d hubs", woken)

    def stop(self) -> None:
        self._stopping.set()


# --- one process ----------------------------------------------------------------------------------------------


class FleetProcess:
    """The hubs of one process and their loops."""

    def __init__(
        self,
        config: FleetConfig,
        index: int,
        *,
        producer: ConfirmedProducer | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``producer``, ``monotonic`` and ``sleep`` are the seams a test replaces (no Kafka, no waiting)."""
        self.config = config
        self.index = index
        self.producer = producer or SharedProducer(config.kafka, stall_timeout=config.send_timeout)
        self._monotonic = monotonic
        self._sleep = sleep
        self.hubs = [
            FleetHub(name, status_topic(name, config.status_prefix), self.producer, config.digests, config.send_mode)
            for name in config.share(index)
        ]
        self.seeded: list[SeededHub] = []
        self.change_log = ChangeLog(config.change_log_for(index))
        self.changes = 0
        self._nudges: dict[str, asyncio.Event] = {}
        self._pool = ThreadPoolExecutor(max_workers=config.senders, thread_name_prefix="fleet-send")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = time.time()

    def seed(self) -> None:
        """Fill every hub's inventory (the simulator's objects; the same names and seed give the same objects)."""
        started = time.monotonic()
        for number, hub in enumerate(self.hubs, 1):
            state = seed_hub(hub.inventory, hub.name, self.config.shape, self.config.seed)
            self.seeded.append(SeededHub(hub.name, hub.inventory, state))
            if number % 100 == 0:
                log.info("process %d: seeded %d of %d hubs", self.index, number, len(self.hubs))
        log.info("process %d: %d hubs seeded in %.1fs", self.index, len(self.hubs), time.monotonic() - started)

    async def run(self, stop: asyncio.Event) -> dict[str, Any]:
        """Listen, start every hub, run the loops until ``stop`` is set (or the duration ends); the figures."""
        self._loop = asyncio.get_running_loop()
        self._nudges = {hub.name: asyncio.Event() for hub in self.hubs}
        listener = SpecListener(self.config, f"{self.config.group_tag}-{self.index}", SpecRouter(self.hubs, self._wake))
        listener.start()
        await self._loop.run_in_executor(None, listener.assigned.wait, 30.0)
        for hub in self.hubs:  # cursors at the logs' ends always: the seeded objects are no delta
            hub.start(resync=self.config.startup_resync)
        if self.config.ready_file is not None:  # a benchmark waits for every process's file before it asks
            ready = self.config.ready_file.with_name(f"{self.config.ready_file.name}.{self.index}")
            ready.write_text(f"{len(self.hubs)} hubs, listener assigned: {listener.assigned.is_set()}\n")
        self._started = time.time()
        tasks = [asyncio.create_task(coroutine) for coroutine in self._loops()]
        try:
            await self._until(stop)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            listener.stop()
            self._pool.shutdown(wait=True)
            undelivered = self.producer.close()
            self.change_log.close()
            listener.join(timeout=5)
        return self.figures(undelivered)

    async def _until(self, stop: asyncio.Event) -> None:
        if self.config.duration is None:
            await stop.wait()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=self.config.duration)

    def _loops(self) -> list[Any]:
        rng = random.Random(f"{self.config.seed}:phases:{self.index}")
        loops: list[Any] = []
        for hub in self.hubs:
            loops.append(self._drain_loop(hub))
            loops.append(self._every(self.config.delta_interval, rng.random(), hub.sync))
            loops.append(self._every(self.config.heartbeat, rng.random(), hub.heartbeat))
        if self.config.changes_per_second > 0:
            loops.append(self._change_loop())
        if self.config.stats_interval > 0:
            loops.append(self._stats_loop())
        return loops

    def _wake(self, hub: FleetHub) -> None:
        """Called on the listener's thread: wake the hub's drain on the loop's (the agent's nudge)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._nudges[hub.name].set)

    async def _in_pool(self, work: Callable[[], T]) -> T:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._pool, work)

    async def _drain_loop(self, hub: FleetHub) -> None:
        """One type per ``DRAIN_SPACING`` (a second), start to start, as the agent's drain; idle until nudged."""
        nudge = self._nudges[hub.name]
        last_start = float("-inf")
        while True:
            if hub.queue.length() == 0:
                nudge.clear()
                if hub.queue.length() == 0:
                    await nudge.wait()
            wait = last_start + DRAIN_SPACING - self._monotonic()
            if wait > 0:
                await self._sleep(wait)
            last_start = self._monotonic()
            await self._in_pool(hub.drain_one)

    async def _every(self, interval: float, phase: float, work: Callable[[], object]) -> None:
        """Run ``work`` every ``interval`` seconds from a random phase (hubs do not tick together); a late run is
        followed by the next one on the grid, never by a burst of catch-ups."""
        due = self._monotonic() + phase * interval
        while True:
            await self._sleep(max(0.0, due - self._monotonic()))
            await self._in_pool(work)
            due += interval
            now = self._monotonic()
            if due < now:
                due += ((now - due) // interval + 1) * interval

    async def _change_loop(self) -> None:
        """This process's share of the fleet's change rate, made on the loop's thread every ``change_tick``."""
        share = self.config.changes_per_second * len(self.hubs) / max(self.config.hubs, 1)
        maker = ChangeMaker(
            self.seeded,
            share,
            mix=self.config.mix,
            seed=self.config.seed * 1000 + self.index,
            log=self.change_log,
        )
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.config.change_tick)
            now = time.monotonic()
            self.changes += maker.step(now - last)
            last = now

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.stats_interval)
            figures = self.figures()
            log.info(
                "process %d: %d hubs, %d waiting types, %d resyncs, %d deltas, %d heartbeats, %d messages, "
                "%.1f MB, %d changes, %d failures",
                self.index,
                figures["hubs"],
                figures["waiting_types"],
                figures["resyncs"],
                figures["deltas"],
                figures["heartbeats"],
                figures["messages"],
                figures["bytes"] / 1e6,
                figures["changes"],
                figures["failures"],
            )

    def figures(self, undelivered: int = 0) -> dict[str, Any]:
        counters = [hub.counters for hub in self.hubs]
        last_resync = max((c.last_resync_at for c in counters), default=0.0)
        return {
            "process": self.index,
            "hubs": len(self.hubs),
            "waiting_types": sum(hub.queue.length() for hub in self.hubs),
            "resyncs": sum(c.resyncs for c in counters),
            "deltas": sum(c.deltas for c in counters),
            "heartbeats": sum(c.heartbeats for c in counters),
            "messages": sum(c.messages for c in counters),
            "bytes": sum(c.bytes for c in counters),
            "failures": sum(c.failures for c in counters),
            "changes": self.changes,
            "started_at": round(self._started, 3),
            "last_resync_confirmed_at": round(last_resync, 3),
            "undelivered_at_exit": undelivered,
        }


def run_process(config: FleetConfig, index: int, results: Any = None) -> dict[str, Any]:
    """A process's whole life: seed, run until SIGTERM/SIGINT or the duration, report (on ``results``, a
    multiprocessing queue, when given)."""
    process = FleetProcess(config, index)
    process.seed()

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        return await process.run(stop)

    figures = asyncio.run(main())
    if results is not None:
        results.put(figures)
    return figures
