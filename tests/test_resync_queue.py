"""The hub's resync queue on real Redis: FIFO, coalescing, wait times, and safety with several processes."""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
import time_machine
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_tasks.resync_queue import InFlight, ResyncQueue, Retry, Waiting

TYPES = ("managedhub.info", "managedcluster", "policy.localspec", "policy.localcompliance")


def delete_hub_keys(client: redis.Redis, hub: str) -> None:
    keys = list(client.scan_iter(match=f"gh:{hub}:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def queue(redis_client: redis.Redis, hub_name: str) -> Iterator[ResyncQueue]:
    yield ResyncQueue(redis_client, hub_name)
    delete_hub_keys(redis_client, hub_name)


def waiting_types(queue: ResyncQueue) -> list[str]:
    return [item.type for item in queue.items()]


# --- one process ---------------------------------------------------------------------------------------------------


def test_the_requests_a_type_answers_stay_noted_until_a_resync_that_carried_them_succeeds(queue: ResyncQueue) -> None:
    queue.note_answers(["managedcluster", "policy.localspec"], "12")
    queue.note_answers(["managedcluster"], "9")
    queue.note_answers(["managedcluster"], "")  # a request without an id (an upstream manager's) notes nothing

    carried = queue.answers("managedcluster")
    assert carried == ["9", "12"]
    assert queue.answers("managedcluster") == ["9", "12"]  # a resync that fails or dies leaves them for the next
    queue.note_answers(["managedcluster"], "13")  # came while the resync ran: the next resync answers it
    queue.answered("managedcluster", carried)
    assert queue.answers("managedcluster") == ["13"]
    assert queue.answers("policy.localspec") == ["12"]


def test_types_come_out_in_the_order_they_were_pushed(queue: ResyncQueue) -> None:
    queue.push(["policy.localspec"], now=1.0)
    queue.push(["managedcluster", "managedhub.info"], now=2.0)
    queue.push(["policy.localcompliance"], now=3.0)

    popped = [queue.pop() for _ in range(4)]

    assert [item.type for item in popped if item] == [
        "policy.localspec",
        "managedcluster",
        "managedhub.info",
        "policy.localcompliance",
    ]
    assert queue.pop() is None


def test_a_type_already_waiting_is_not_queued_twice_and_keeps_its_place(queue: ResyncQueue) -> None:
    queue.push(["managedcluster", "policy.localspec"], now=10.0)
    queue.push(["policy.localcompliance", "managedcluster"], now=20.0)

    assert waiting_types(queue) == ["managedcluster", "policy.localspec", "policy.localcompliance"]
    # The first request's enqueue time stays: the wait is measured from the oldest request.
    assert queue.items()[0] == Waiting("managedcluster", 10.0)


def test_push_returns_how_many_types_were_added(queue: ResyncQueue) -> None:
    assert queue.push(["managedcluster", "policy.localspec"]) == 2
    assert queue.push(["managedcluster", "managedhub.info", "managedhub.info"]) == 1
    assert queue.push(["managedcluster"]) == 0
    assert queue.push([]) == 0
    assert queue.length() == 3


def test_pop_returns_the_type_with_its_enqueue_time(queue: ResyncQueue) -> None:
    queue.push(["managedcluster"], now=1_700_000_000.25)
    queue.push(["policy.localspec"], now=1_700_000_001.5)

    assert queue.pop() == Waiting("managedcluster", 1_700_000_000.25)
    assert queue.pop() == Waiting("policy.localspec", 1_700_000_001.5)
    assert queue.pop() is None


def test_a_popped_type_is_forgotten_and_can_be_queued_again(queue: ResyncQueue) -> None:
    queue.push(["managedcluster", "policy.localspec"], now=1.0)
    assert queue.pop() == Waiting("managedcluster", 1.0)

    assert queue.push(["managedcluster"], now=5.0) == 1

    assert queue.items() == [Waiting("policy.localspec", 1.0), Waiting("managedcluster", 5.0)]
    assert queue.pop() == Waiting("policy.localspec", 1.0)
    assert queue.pop() == Waiting("managedcluster", 5.0)


def test_items_and_length_show_what_waits_without_removing_it(queue: ResyncQueue) -> None:
    assert queue.items() == []
    assert queue.length() == 0
    queue.push(["managedhub.info"], now=100.0)
    queue.push(["managedcluster"], now=101.0)

    assert queue.items() == [Waiting("managedhub.info", 100.0), Waiting("managedcluster", 101.0)]
    assert queue.length() == 2
    assert queue.items() == [Waiting("managedhub.info", 100.0), Waiting("managedcluster", 101.0)]


def test_clear_empties_the_queue_and_lets_every_type_be_queued_again(queue: ResyncQueue) -> None:
    queue.push(TYPES)
    queue.clear()
    assert queue.length() == 0
    assert queue.push(TYPES) == len(TYPES)


def test_each_hub_has_its_own_queue(redis_client: redis.Redis, run_id: str) -> None:
    hubs = [f"hub-{run_id}-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    first, second = (ResyncQueue(redis_client, hub) for hub in hubs)
    try:
        first.push(["managedcluster"])
        assert second.length() == 0
        assert second.push(["managedcluster"]) == 1
        assert [w.type for w in first.items()] == [w.type for w in second.items()] == ["managedcluster"]
    finally:
        for hub in hubs:
            delete_hub_keys(redis_client, hub)


def test_waited_is_the_time_since_the_type_was_queued() -> None:
    item = Waiting("managedcluster", 1000.0)
    assert item.waited(1012.5) == 12.5
    assert item.waited(1000.0) == 0.0
    # A clock slightly behind the queuing process never gives a negative wait.
    assert item.waited(999.0) == 0.0


def test_push_stamps_the_current_time_and_waited_defaults_to_now(queue: ResyncQueue) -> None:
    start = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False) as traveller:
        queue.push(["managedcluster"])
        traveller.shift(30)
        queue.push(["policy.localspec"])
        traveller.shift(15)

        waits = {item.type: item.waited() for item in queue.items()}
        popped = queue.pop()

    assert waits == {"managedcluster": 45.0, "policy.localspec": 15.0}
    assert popped == Waiting("managedcluster", start.timestamp())


# --- nothing popped is lost, and the index heals itself (issue 11) ---------------------------------------------------

DRAIN = "gh:test:agent:lock:drain"  # a drain lease key no process holds


def test_a_popped_type_stays_in_flight_until_it_is_done(queue: ResyncQueue) -> None:
    queue.push(["managedcluster"], now=1.0)
    assert queue.pop(owner="host:1:2.0:ab", now=2.0) == Waiting("managedcluster", 1.0)

    assert queue.in_flight() == [InFlight("managedcluster", 1.0, 2.0, "host:1:2.0:ab")]
    queue.done("managedcluster")
    assert queue.in_flight() == []


def test_what_a_dead_drain_left_in_flight_goes_back_to_the_head_in_its_order(
    queue: ResyncQueue, redis_client: redis.Redis, hub_name: str
) -> None:
    queue.push(["managedcluster", "policy.localspec", "managedhub.info"], now=1.0)
    queue.pop(owner="dead", now=2.0)
    queue.pop(owner="dead", now=3.0)
    lease = f"gh:{hub_name}:agent:lock:drain"
    redis_client.set(lease, "a live drain", px=5000)

    assert queue.settle(lease, now=4.0) == 1  # a drain holds the lease: what is in flight is its own
    assert len(queue.in_flight()) == 2

    redis_client.delete(lease)  # the lease lapsed: its owner died
    assert queue.settle(lease, now=5.0) == 3
    assert waiting_types(queue) == ["managedcluster", "policy.localspec", "managedhub.info"]
    assert queue.items()[0] == Waiting("managedcluster", 1.0)  # it keeps its first enqueue time
    assert queue.in_flight() == []


def test_recover_puts_back_everything_in_flight_and_keeps_a_type_requested_again_in_its_place(
    queue: ResyncQueue,
) -> None:
    queue.push(["managedcluster", "policy.localspec"], now=1.0)
    queue.pop(owner="dead", now=2.0)
    queue.push(["managedcluster"], now=3.0)  # requested again while in flight: it waits behind policy.localspec

    assert queue.recover() == ["managedcluster"]
    assert waiting_types(queue) == ["policy.localspec", "managedcluster"]


def test_a_lost_queue_list_is_rebuilt_from_its_index_at_the_next_settle(
    queue: ResyncQueue, redis_client: redis.Redis
) -> None:
    queue.push(["managedcluster"], now=1.0)
    queue.push(["policy.localspec", "policy.localcompliance"], now=2.0)
    redis_client.delete(queue._list)  # the list is lost; the since hash still says the types wait

    assert queue.push(["managedcluster", "policy.localspec"], now=3.0) == 0  # they look queued: not added again
    assert queue.settle(DRAIN, now=4.0) == 3
    assert queue.items() == [
        Waiting("managedcluster", 1.0),
        Waiting("policy.localspec", 2.0),
        Waiting("policy.localcompliance", 2.0),
    ]
    assert queue.repairs() == 3


def test_a_lost_index_is_rebuilt_from_the_list_and_duplicates_are_merged(
    queue: ResyncQueue, redis_client: redis.Redis
) -> None:
    queue.push(["managedcluster", "policy.localspec"], now=1.0)
    redis_client.delete(queue._since)
    queue.push(["managedcluster"], now=2.0)  # without its index the list takes it twice

    assert queue.settle(DRAIN, now=3.0) == 2
    assert waiting_types(queue) == ["managedcluster", "policy.localspec"]
    assert queue.push(["policy.localspec"], now=4.0) == 0
    assert [item.type for item in (queue.pop(), queue.pop(), queue.pop()) if item] == [
        "managedcluster",
        "policy.localspec",
    ]


def test_a_type_with_unanswered_requests_is_queued_when_queue_and_index_are_both_lost(
    queue: ResyncQueue, redis_client: redis.Redis
) -> None:
    queue.note_answers(["managedcluster", "policy.localspec"], "7")
    queue.push(["managedcluster", "policy.localspec"], now=1.0)
    redis_client.delete(queue._list, queue._since)

    assert queue.settle(DRAIN, ["managedhub.info", "managedcluster", "policy.localspec"], now=2.0) == 2
    assert waiting_types(queue) == ["managedcluster", "policy.localspec"]
    # Once answered, nothing keeps it queued.
    queue.pop()
    queue.done("managedcluster")
    queue.answered("managedcluster", ["7"])
    queue.settle(DRAIN, ["managedcluster", "policy.localspec"], now=3.0)
    assert waiting_types(queue) == ["policy.localspec"]


def test_a_failed_type_is_queued_again_when_its_backoff_ends(queue: ResyncQueue) -> None:
    assert queue.retry_later("managedcluster", now=100.0) == Retry("managedcluster", 1, 101.0)
    assert queue.settle(DRAIN, now=100.5) == 0
    assert queue.settle(DRAIN, now=101.0) == 1
    assert queue.retries() == []
    assert queue.attempts() == {"managedcluster": 1}

    queue.pop()
    assert queue.retry_later("managedcluster", now=110.0) == Retry("managedcluster", 2, 112.0)
    assert [queue.retry_later("managedcluster", now=120.0).at - 120.0 for _ in range(6)] == [4, 8, 16, 32, 60, 60]
    queue.succeeded("managedcluster")
    assert queue.retries() == []
    assert queue.attempts() == {}


def test_a_retry_further_ahead_than_any_backoff_is_due_at_once_the_clock_was_stepped_back(queue: ResyncQueue) -> None:
    queue.retry_later("managedcluster", now=1000.0)  # due at 1001
    assert queue.settle(DRAIN, now=1000.0 - 360) == 1  # six minutes back: waiting would take six minutes
    queue.pop()
    queue.done("managedcluster")
    queue.retry_later("managedcluster", now=1000.0)  # a backoff of 2 s, at 1002
    assert queue.settle(DRAIN, now=1000.0 - 50) == 0  # within the longest backoff: it still waits


# --- the queue against a model (hypothesis) ------------------------------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.lists(st.sampled_from(TYPES), max_size=5)),
        st.tuples(st.just("pop"), st.just([])),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(operations)
def test_any_sequence_of_pushes_and_pops_behaves_like_an_ordered_set(
    redis_url: str, ops: list[tuple[str, list[str]]]
) -> None:
    client = redis.Redis.from_url(redis_url)
    hub = f"hub-prop-{uuid.uuid4().hex[:10]}"
    queue = ResyncQueue(client, hub)
    model: dict[str, float] = {}  # insertion-ordered: type -> enqueue time
    try:
        for step, (operation, names) in enumerate(ops):
            now = float(step)
            if operation == "push":
                expected_added = 0
                for name in names:
                    if name not in model:
                        model[name] = now
                        expected_added += 1
                assert queue.push(names, now=now) == expected_added
            else:
                expected = next(iter(model.items()), None)
                popped = queue.pop()
                if expected is None:
                    assert popped is None
                else:
                    assert popped == Waiting(*expected)
                    del model[expected[0]]
            assert queue.items() == [Waiting(name, since) for name, since in model.items()]
            assert queue.length() == len(model)
    finally:
        delete_hub_keys(client, hub)
        client.close()


# --- several processes ---------------------------------------------------------------------------------------------

PUSHERS = 6
POPPERS = 3
ROUNDS = 200


def push_many(redis_url: str, hub: str, pusher: int, rounds: int, start: Any, results: Any) -> None:
    """Push every type ``rounds`` times in random order; report the pushes that added the type.

    Each push carries a unique ``now`` (pusher and sequence number), so the enqueue time a pop returns names the
    exact push that queued it.
    """
    client = redis.Redis.from_url(redis_url)
    queue = ResyncQueue(client, hub)
    rng = random.Random(pusher)
    added: list[tuple[str, float]] = []
    odd_counts: list[int] = []
    start.wait()
    sequence = 0
    for _ in range(rounds):
        names = list(TYPES)
        rng.shuffle(names)
        for name in names:
            sequence += 1
            stamp = float(pusher * 1_000_000 + sequence)
            # Sometimes the same type twice in one call: still at most one can be added.
            batch = [name, name] if rng.random() < 0.2 else [name]
            count = queue.push(batch, now=stamp)
            if count:
                added.append((name, stamp))
            if count not in (0, 1):
                odd_counts.append(count)
    results.put(("pushed", pusher, added, odd_counts))
    client.close()


def pop_until_done(redis_url: str, hub: str, popper: int, start: Any, pushers_done: Any, results: Any) -> None:
    """Pop until the pushers are finished and the queue is empty; report every popped item."""
    client = redis.Redis.from_url(redis_url)
    queue = ResyncQueue(client, hub)
    popped: list[tuple[str, float]] = []
    start.wait()
    while True:
        finished = pushers_done.is_set()  # read before popping: an empty queue after that is final
        item = queue.pop()
        if item is not None:
            popped.append((item.type, item.enqueued_at))
        elif finished:
            break
        else:
            time.sleep(0.0005)
    results.put(("popped", popper, popped, []))
    client.close()


def drain_reports(results: Any) -> list[Any]:
    """The workers' reports that have arrived so far, without waiting."""
    reports = []
    while True:
        try:
            reports.append(results.get_nowait())
        except queue_module.Empty:
            return reports


def consistent_snapshot(client: redis.Redis, hub: str) -> tuple[list[str], set[str]]:
    """The list and the since-hash read in one MULTI, so they are from the same instant."""
    pipe = client.pipeline(transaction=True)
    pipe.lrange(f"gh:{hub}:resync:queue", 0, -1)
    pipe.hkeys(f"gh:{hub}:resync:since")
    listed, hashed = pipe.execute()
    return [name.decode() for name in listed], {name.decode() for name in hashed}


def test_concurrent_pushers_and_poppers_never_lose_or_duplicate_a_request(
    redis_client: redis.Redis, redis_url: str, queue: ResyncQueue, hub_name: str
) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(PUSHERS + POPPERS + 1)
    pushers_done = ctx.Event()
    results = ctx.Queue()
    pushers = [
        ctx.Process(target=push_many, args=(redis_url, hub_name, index + 1, ROUNDS, start, results))
        for index in range(PUSHERS)
    ]
    poppers = [
        ctx.Process(target=pop_until_done, args=(redis_url, hub_name, index, start, pushers_done, results))
        for index in range(POPPERS)
    ]
    for process in pushers + poppers:
        process.start()
    try:
        start.wait(timeout=60)
        snapshots = 0
        longest = 0
        # Pushers are done when their reports arrive (a process with unread queue data never exits, so waiting for
        # the processes themselves could deadlock).
        reports: list[Any] = []
        while len(reports) < PUSHERS:
            reports.extend(drain_reports(results))
            listed, hashed = consistent_snapshot(redis_client, hub_name)
            assert len(listed) == len(set(listed)), f"a type waits twice: {listed}"
            assert set(listed) == hashed, f"list {listed} and since-hash {sorted(hashed)} disagree"
            snapshots += 1
            longest = max(longest, len(listed))
        pushers_done.set()
        reports.extend(results.get(timeout=60) for _ in range(POPPERS))
        for process in pushers + poppers:
            process.join(timeout=30)
            assert process.exitcode == 0, f"{process.name} exited with {process.exitcode}"
    finally:
        for process in pushers + poppers:
            if process.is_alive():
                process.kill()

    added = [item for kind, _, items, _ in reports if kind == "pushed" for item in items]
    popped = [item for kind, _, items, _ in reports if kind == "popped" for item in items]
    assert [odd for *_, odd in reports if odd] == [], "push of one type reported adding more than one"

    # Every successful push was popped exactly once, with the enqueue time of that push; nothing else was popped.
    assert Counter(popped) == Counter(added)
    assert len(set(popped)) == len(popped)
    per_type = Counter(name for name, _ in popped)
    assert set(per_type) == set(TYPES)
    assert sum(per_type.values()) < PUSHERS * ROUNDS * len(TYPES), "no push was ever coalesced: no contention"
    assert snapshots > 10, "the invariant was barely observed while pushers ran"
    assert queue.length() == 0
    assert consistent_snapshot(redis_client, hub_name) == ([], set())
    print(f"{len(popped)} pops, {snapshots} snapshots, longest queue {longest}")


def test_items_read_while_others_push_and_pop_always_carry_the_enqueue_time(
    redis_client: redis.Redis, redis_url: str, queue: ResyncQueue, hub_name: str
) -> None:
    """``items()`` feeds the status command and the wait-time metric: a type listed must come with its real time."""
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(3)
    pushers_done = ctx.Event()
    results = ctx.Queue()
    workers = [
        ctx.Process(target=push_many, args=(redis_url, hub_name, 1, ROUNDS, start, results)),
        ctx.Process(target=pop_until_done, args=(redis_url, hub_name, 0, start, pushers_done, results)),
    ]
    for process in workers:
        process.start()
    bad: list[list[Waiting]] = []
    reads = 0
    try:
        start.wait(timeout=60)
        pushed: list[Any] = []
        while not pushed:
            pushed = drain_reports(results)
            seen = queue.items()
            reads += 1
            # Every push in this test stamps at least 1,000,000; 0.0 means "listed, but its time was not found".
            if any(item.enqueued_at < 1_000_000 for item in seen):
                bad.append(seen)
        pushers_done.set()
        results.get(timeout=60)
        for process in workers:
            process.join(timeout=30)
    finally:
        for process in workers:
            if process.is_alive():
                process.kill()

    assert reads > 10
    assert bad == [], f"{len(bad)} of {reads} reads listed a type without its enqueue time, e.g. {bad[0]}"
