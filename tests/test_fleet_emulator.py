"""The fleet emulator (``bench/fleet``) sends what the agent sends, and paces, routes and versions as it does.

Every test here but the last runs without services: a fake producer records the messages, and the agent's own
``VersionStore``/``StateStore`` run on a dict standing in for Redis. The last compares with the agent on the real
Redis (select it out with ``-k "not redis"`` where no Redis runs).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
import time_machine

from agent_tasks.emitter import Emitter
from agent_tasks.inventory import Change, ChangeBatch, Cursor, LogPosition, RedisInventory
from agent_tasks.simulate import populate
from agent_tasks.state import StateStore
from agent_tasks.types import RESYNC_ORDER, STATUS_TYPES, status_type
from agent_tasks.versions import VersionStore
from bench.fleet.changes import CHANGED_AT, ChangeLog, ChangeMaker, SeededHub, Shape, seed_hub
from bench.fleet.hub import FleetHub
from bench.fleet.run import FleetConfig, FleetProcess, SpecRouter
from globalhub.protocol import jsonutil
from globalhub.protocol.codec import OutgoingMessage, decode
from globalhub.protocol.events import BROADCAST, EXT_ANSWERS, EXT_VERSION, RESYNC_TYPES
from globalhub.protocol.kafka import ConfirmedProducer, KafkaSettings
from globalhub.protocol.requests import resync_request

SHAPE = Shape(clusters=12, policies=3, compliance=9)
SEED = 7
NOW = datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC)
CLUSTERS, POLICIES, COMPLIANCE = "managedcluster", "policy.localspec", "policy.localcompliance"


class RecordingProducer(ConfirmedProducer):
    """Records what would go to Kafka, stamped with the test's clock; every send is confirmed."""

    def __init__(self, clock: Any = None) -> None:  # no super().__init__(): no librdkafka client
        self.sent: list[tuple[str, OutgoingMessage]] = []
        self.times: list[float] = []
        self._clock = clock

    def send(self, topic: str, messages: Iterable[OutgoingMessage], *, timeout: float | None = None) -> int:
        batch = [(topic, message) for message in messages]
        self.sent += batch
        if self._clock is not None:
            self.times += [self._clock()] * len(batch)
        return len(batch)


class DictRedis:
    """The few hash commands the agent's ``VersionStore`` and ``StateStore`` use, on dicts, replying bytes."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[bytes, bytes]] = {}

    def hget(self, key: str, field: str) -> bytes | None:
        return self.hashes.get(key, {}).get(field.encode())

    def hset(self, key: str, field: str | None = None, value: Any = None, mapping: Any = None) -> int:
        target = self.hashes.setdefault(key, {})
        items = dict(mapping or {})
        if field is not None:
            items[field] = value
        for name, item in items.items():
            target[str(name).encode()] = str(item).encode()
        return len(items)

    def hincrby(self, key: str, field: str, amount: int) -> int:
        target = self.hashes.setdefault(key, {})
        target[field.encode()] = str(int(target.get(field.encode(), b"0")) + amount).encode()
        return int(target[field.encode()])

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        return dict(self.hashes.get(key, {}))

    def hdel(self, key: str, *fields: str) -> int:
        target = self.hashes.get(key, {})
        return sum(1 for name in fields if target.pop(name.encode(), None) is not None)

    def delete(self, *keys: str) -> int:
        return sum(1 for key in keys if self.hashes.pop(key, None) is not None)

    def pipeline(self, transaction: bool = True) -> DictRedis:
        return self

    def execute(self) -> list[Any]:
        return []


class HashInventory:
    """An agent inventory as ``RedisInventory`` keeps it (objects encoded by ``apply``), with no change log: what
    a freshly populated hub holds at an agent start."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, bytes]] = {}

    def apply(self, short_type: str, changes: Iterable[Change], *, chunk: int = 500) -> int:
        count = 0
        for change in changes:
            target = self.objects.setdefault(short_type, {})
            if change.obj is None:
                target.pop(change.object_id, None)
            else:
                target[change.object_id] = jsonutil.dumps(change.obj)
            count += 1
        return count

    def get_encoded(self, short_type: str, ids: list[str]) -> list[bytes | None]:
        return [self.objects.get(short_type, {}).get(i) for i in ids]

    def count(self, short_type: str) -> int:
        return len(self.objects.get(short_type, {}))

    def clear(self, short_type: str) -> None:
        self.objects.pop(short_type, None)

    def list_encoded(self, short_type: str) -> Iterator[tuple[str, bytes]]:
        return iter(list(self.objects.get(short_type, {}).items()))

    def log_position(self, short_type: str) -> LogPosition:
        return LogPosition("0-0", 0, 0)

    def changes_since(self, short_type: str, cursor: Cursor, until: LogPosition, limit: int) -> ChangeBatch:
        return ChangeBatch([], lost=False)

    def trim_through(self, short_type: str, cursor: Cursor) -> None:
        pass


def fixed_uuids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Event ids and resync ids from a counter, so two runs of the same sends are byte for byte comparable."""
    counter = itertools.count(1)
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=next(counter)))


def wire(sent: list[tuple[str, OutgoingMessage]]) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    return [(message.key, message.value, message.headers) for _, message in sent]


def populate_as_the_fleet(inventory: Any, hub: str) -> None:
    """The agent's inventory filled with the objects the fleet seeds for ``hub``."""
    populate(
        inventory,
        hub,
        clusters=SHAPE.clusters,
        policies=SHAPE.policies,
        clusters_per_policy=SHAPE.clusters_per_policy,
        seed=SEED,
    )


def hub_with_startup_resync(name: str, producer: ConfirmedProducer) -> FleetHub:
    hub = FleetHub(name, f"gh-status.{name}", producer)
    seed_hub(hub.inventory, name, SHAPE, SEED)
    hub.start()
    while hub.drain_one() is not None:
        pass
    return hub


def agent_startup_resync(name: str, inventory: Any, client: Any, producer: ConfirmedProducer) -> None:
    """What ``Agent.start`` and four drains do to the emitter: versions reset, cursors at the end, one full resync
    per type in the manager's order, answering no request."""
    versions, state = VersionStore(client, name), StateStore(client, name)
    versions.reset_all()
    state.reset()
    for short in STATUS_TYPES:
        state.update(short, cursor=str(Cursor.at(inventory.log_position(short))))
    emitter = Emitter(name, f"gh-status.{name}", inventory, versions, state, producer)
    for short in RESYNC_ORDER:
        emitter.full_resync(status_type(short), [])


def test_a_hubs_startup_resync_is_byte_for_byte_what_the_agents_emitter_sends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent_inventory = HashInventory()
    populate_as_the_fleet(agent_inventory, "fleet-00001")
    fleet, agent = RecordingProducer(), RecordingProducer()
    with time_machine.travel(NOW, tick=False):
        fixed_uuids(monkeypatch)
        hub_with_startup_resync("fleet-00001", fleet)
        fixed_uuids(monkeypatch)
        agent_startup_resync("fleet-00001", agent_inventory, DictRedis(), agent)

    assert wire(fleet.sent) == wire(agent.sent)
    assert {topic for topic, _ in fleet.sent} == {"gh-status.fleet-00001"}
    types = [decode(m.key, m.value, m.headers).type for _, m in fleet.sent]
    assert [t for t, _ in itertools.groupby(types)] == [t.value for t in RESYNC_TYPES]
    versions = {decode(m.key, m.value, m.headers).extension(EXT_VERSION) for _, m in fleet.sent}
    assert versions == {"0.0"}  # an agent start: Generation 0 tells the manager to reset


def test_a_hub_holds_the_shape_it_was_given() -> None:
    hub = FleetHub("fleet-00002", "gh-status.fleet-00002", RecordingProducer())
    seed_hub(hub.inventory, hub.name, SHAPE, SEED)
    rows = sum(
        len(entry[field])
        for _, raw in hub.inventory.list_encoded(COMPLIANCE)
        for entry in [jsonutil.loads(raw)]
        for field in (
            "compliantClusters",
            "nonCompliantClusters",
            "unknownComplianceClusters",
            "pendingComplianceClusters",
        )
    )
    assert (hub.inventory.count(CLUSTERS), hub.inventory.count(POLICIES), rows) == (12, 3, 9)


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


def test_the_drain_sends_one_queued_type_per_second_in_the_managers_order() -> None:
    clock = FakeTime()
    producer = RecordingProducer(clock.monotonic)
    config = FleetConfig(kafka=KafkaSettings(), hubs=1, shape=SHAPE)
    process = FleetProcess(config, 0, producer=producer, monotonic=clock.monotonic, sleep=clock.sleep)
    (hub,) = process.hubs
    seed_hub(hub.inventory, hub.name, SHAPE, SEED)
    hub.start()

    async def drain_until_sent() -> None:
        process._loop = asyncio.get_running_loop()
        process._nudges = {hub.name: asyncio.Event()}
        task = asyncio.create_task(process._drain_loop(hub))
        while hub.counters.resyncs < len(RESYNC_ORDER):
            await asyncio.sleep(0.001)
        task.cancel()

    asyncio.run(drain_until_sent())
    starts: dict[str, float] = {}
    for (_, message), at in zip(producer.sent, producer.times, strict=True):
        starts.setdefault(decode(message.key, message.value, message.headers).type, at)
    assert list(starts) == [t.value for t in RESYNC_TYPES]
    assert [at - 1000.0 for at in starts.values()] == [0.0, 1.0, 2.0, 3.0]


def test_a_broadcast_resync_request_queues_every_hub_and_its_id_is_answered() -> None:
    producer = RecordingProducer()
    hubs = [FleetHub(f"fleet-{i:05d}", f"gh-status.fleet-{i:05d}", producer) for i in range(5)]
    woken: list[str] = []
    router = SpecRouter(hubs, lambda hub: woken.append(hub.name))
    request = resync_request(BROADCAST, RESYNC_TYPES, request_id="42")

    assert router.route(request.key, request.value, list(request.headers)) == 5
    assert woken == [hub.name for hub in hubs]
    for hub in hubs:
        assert [item.type for item in hub.queue.items()] == list(RESYNC_ORDER)
    seed_hub(hubs[0].inventory, hubs[0].name, SHAPE, SEED)
    hubs[0].drain_one()
    (_, answer), *_ = producer.sent
    assert decode(answer.key, answer.value, answer.headers).extension(EXT_ANSWERS) == "42"


def test_a_request_for_one_hub_queues_that_hub_only_and_coalesces() -> None:
    hubs = [FleetHub(f"fleet-{i:05d}", f"gh-status.fleet-{i:05d}", RecordingProducer()) for i in range(3)]
    router = SpecRouter(hubs, lambda hub: None)
    hubs[1].queue.push([COMPLIANCE])
    request = resync_request("fleet-00001", [CLUSTERS, COMPLIANCE])

    assert router.route(request.key, request.value, list(request.headers)) == 1
    assert [item.type for item in hubs[1].queue.items()] == [COMPLIANCE, CLUSTERS]
    assert hubs[0].queue.length() == hubs[2].queue.length() == 0


def versions_sent(producer: RecordingProducer, short: str) -> list[str]:
    events = [decode(m.key, m.value, m.headers) for _, m in producer.sent]
    return [str(e.extension(EXT_VERSION)) for e in events if e.type.endswith("." + short)]


def test_delta_changes_bump_versions_as_the_agent_does() -> None:
    producer = RecordingProducer()
    hub = hub_with_startup_resync("fleet-00003", producer)
    seeded = SeededHub(hub.name, hub.inventory, seed_hub(hub.inventory, hub.name, SHAPE, SEED))
    hub.start()  # seeding again logged changes: start over from the logs' ends, as an agent start does
    while hub.drain_one() is not None:
        pass
    assert str(hub.versions.get(CLUSTERS)) == "1.0"  # the resync went out as 0.0, then Next

    maker = ChangeMaker([seeded], 0)
    changed = [maker.make(seeded, CLUSTERS) for _ in range(3)] + [maker.make(seeded, COMPLIANCE) for _ in range(2)]
    producer.sent.clear()
    hub.sync()

    assert versions_sent(producer, CLUSTERS) == ["1.3"]  # three Incr, sent at Generation 1
    assert versions_sent(producer, COMPLIANCE) == ["1.2"]  # a complete type: its whole state, two Incr
    assert str(hub.versions.get(CLUSTERS)) == "2.3" and str(hub.versions.get(COMPLIANCE)) == "2.2"
    producer.sent.clear()
    hub.sync()
    assert producer.sent == []  # nothing changed since: nothing to send, no version moves
    stamps = {
        obj["metadata"]["annotations"][CHANGED_AT]
        for record in changed[:3]
        if record is not None
        for obj in [hub.inventory.get(CLUSTERS, record.object_id)]
        if obj is not None
    }
    assert stamps  # the latest change of each touched cluster carries its time


def test_the_change_maker_spreads_the_rate_over_hubs_and_logs_every_change(tmp_path: Any) -> None:
    hubs = []
    for i in range(4):
        hub = FleetHub(f"fleet-{i:05d}", f"gh-status.fleet-{i:05d}", RecordingProducer())
        hubs.append(SeededHub(hub.name, hub.inventory, seed_hub(hub.inventory, hub.name, SHAPE, SEED)))
    log = ChangeLog(tmp_path / "changes.csv")
    maker = ChangeMaker(hubs, per_second=50, log=log)

    made = sum(maker.step(0.1) for _ in range(10))
    log.close()

    assert made == 50 == log.count
    lines = (tmp_path / "changes.csv").read_text().splitlines()
    assert lines[0] == ",".join(ChangeLog.FIELDS) and len(lines) == 51
    assert len({line.split(",")[1] for line in lines[1:]}) > 1


def test_a_hubs_startup_resync_matches_the_agent_on_real_redis(
    monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis, inventory: RedisInventory, hub_name: str
) -> None:
    """The same comparison against the agent's own Redis inventory, versions and state (needs Redis)."""
    populate_as_the_fleet(inventory, hub_name)
    fleet, agent = RecordingProducer(), RecordingProducer()
    with time_machine.travel(NOW, tick=False):
        fixed_uuids(monkeypatch)
        hub_with_startup_resync(hub_name, fleet)
        fixed_uuids(monkeypatch)
        agent_startup_resync(hub_name, inventory, redis_client, agent)
    # A Redis hash of large values lists them in no set order, and the agent sends them as listed: the same
    # messages (keys, headers) carrying the same objects, in another order across the frames.
    assert [(key, headers) for key, _, headers in wire(fleet.sent)] == [
        (key, headers) for key, _, headers in wire(agent.sent)
    ]
    assert objects_by_type(fleet.sent) == objects_by_type(agent.sent)


def objects_by_type(sent: list[tuple[str, OutgoingMessage]]) -> dict[bytes, list[str]]:
    """Every object and every full-state id entry each type's messages carried, in a canonical order (how they
    are split over the frames follows the listing order)."""
    found: dict[bytes, list[str]] = {}
    for _, message in sent:
        body = json.loads(message.value)
        parts = found.setdefault(message.key, [])
        if not isinstance(body, dict):
            parts.extend(json.dumps(item, sort_keys=True) for item in body)
            continue
        parts.extend(json.dumps(item, sort_keys=True) for item in body.get("resync", []))
        parts.extend("id " + json.dumps(item, sort_keys=True) for item in body.get("resync_metadata", []))
        rest = {key: value for key, value in body.items() if key not in ("resync", "resync_metadata")}
        if rest:
            parts.append(json.dumps(rest, sort_keys=True))
    return {key: sorted(values) for key, values in found.items()}
