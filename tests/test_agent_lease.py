"""Leases on real Redis: renewed while their work runs, lapsing soon after their owner dies, never taken twice."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from agent_tasks.lease import Lease, LeaseLost, held_leases, lease_prefix


@pytest.fixture
def key(redis_client: redis.Redis, hub_name: str) -> Iterator[str]:
    name = lease_prefix(hub_name) + f"test-{uuid.uuid4().hex[:6]}"
    yield name
    redis_client.delete(name)


def wait_for(condition: object, timeout: float, step: float = 0.05) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    start = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout}s")
        time.sleep(step)
    return time.monotonic() - start


def test_a_lease_is_renewed_while_held_and_free_once_released(redis_client: redis.Redis, key: str) -> None:
    lease = Lease(redis_client, key, seconds=1.0)
    other = Lease(redis_client, key, seconds=1.0)
    assert lease.acquire()
    with lease:
        time.sleep(2.5)  # far past its expiry: the renewals kept it
        assert not other.acquire()
        assert redis_client.get(key) == lease.owner.encode()
    assert redis_client.get(key) is None
    assert other.acquire()
    other.release()


def test_a_second_owner_waits_for_the_lease(redis_client: redis.Redis, key: str) -> None:
    first = Lease(redis_client, key, seconds=5.0)
    assert first.acquire()
    second = Lease(redis_client, key, seconds=5.0)
    assert not second.acquire(wait=0.3)  # held: waiting does not take it
    first.release()
    assert second.acquire(wait=5.0)
    second.release()


def hold_then_hang(redis_url: str, key: str, seconds: float, ready: object) -> None:
    client = redis.Redis.from_url(redis_url)
    lease = Lease(client, key, seconds=seconds)
    assert lease.acquire()
    ready.set()  # type: ignore[attr-defined]
    time.sleep(600)


def test_a_killed_owners_lease_lapses_within_its_expiry(redis_url: str, redis_client: redis.Redis, key: str) -> None:
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    owner = context.Process(target=hold_then_hang, args=(redis_url, key, 2.0, ready), daemon=True)
    owner.start()
    try:
        assert ready.wait(60)
        time.sleep(2.5)  # renewed past its expiry while its owner lives
        assert not Lease(redis_client, key, seconds=2.0).acquire()
        os.kill(owner.pid, signal.SIGKILL)  # type: ignore[arg-type]
        owner.join(30)
        successor = Lease(redis_client, key, seconds=2.0)
        wait_for(successor.acquire, timeout=3 * 2.0 + 5)
        successor.release()
    finally:
        if owner.is_alive():
            owner.kill()


def test_work_whose_lease_lapsed_meanwhile_counts_as_failed(redis_client: redis.Redis, key: str) -> None:
    lease = Lease(redis_client, key, seconds=0.6)
    assert lease.acquire()
    with pytest.raises(LeaseLost), lease:
        redis_client.set(key, "someone else")  # it lapsed and another owner took it
        wait_for(lambda: lease.lost, timeout=5)
    assert redis_client.get(key) == b"someone else"  # never deleted what is not ours


def test_held_leases_name_the_owner_and_how_long_it_has_held(
    redis_client: redis.Redis, hub_name: str, key: str
) -> None:
    lease = Lease(redis_client, key, seconds=5.0)
    assert lease.acquire()
    try:
        (held,) = held_leases(redis_client, hub_name, now=time.time() + 3)
        assert held.name == key.removeprefix(lease_prefix(hub_name))
        assert held.owner == lease.owner and lease.owner.split(":")[1] == str(os.getpid())
        assert held.held_seconds is not None and 2.5 <= held.held_seconds <= 60
        assert 0 < held.expires_in <= 5.0
    finally:
        lease.release()
    assert held_leases(redis_client, hub_name) == []
