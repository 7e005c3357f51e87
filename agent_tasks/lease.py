"""Leases: Redis locks that cannot outlive their owner.

A lease is a Redis key with a short expiry (``LEASE_SECONDS``) whose value names its owner
(``<host>:<pid>:<acquired at>:<random>``). While the owner works, a thread renews it every third of the expiry; an
owner that dies (``kill -9``, a lost host, a frozen process) stops renewing, and its lease lapses within
``LEASE_SECONDS``. A restarted agent therefore waits seconds, not the 15 minutes a long fixed expiry cost.

Renewal and release check the value (redis-py's token-checked scripts), so nobody extends or deletes a lease it
does not hold. An owner that could not renew in time (its lease lapsed and someone else may have taken it) learns
it when the work ends: :meth:`Lease.__exit__` raises :class:`LeaseLost`, and the caller counts the work as failed.

Every lease of a hub is under ``gh:<hub>:agent:lock:``; :func:`held_leases` lists them for ``ctl status`` and the
metrics.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from types import TracebackType

import redis
from redis.lock import Lock

from agent_tasks.redisutil import text

log = logging.getLogger(__name__)

LEASE_SECONDS = 10.0  # a dead owner's lease lapses within this long
RENEW_FRACTION = 3  # renewed every LEASE_SECONDS / 3: two renewals may fail before the lease lapses


class LeaseLost(Exception):
    """The lease lapsed while its work ran (the owner could not renew it): the work may have overlapped another."""


def lease_prefix(hub: str) -> str:
    return f"gh:{hub}:agent:lock:"


def new_owner(now: float | None = None) -> str:
    """A lease value naming this process, when it took the lease, and a random part that makes it unique."""
    taken = time.time() if now is None else now
    return f"{socket.gethostname()}:{os.getpid()}:{taken:.3f}:{secrets.token_hex(4)}"


class Lease:
    """One lease on ``key``; ``acquire`` then use as a context manager (``with lease: ...``), which releases it."""

    def __init__(self, client: redis.Redis, key: str, *, seconds: float = LEASE_SECONDS) -> None:
        self.key = key
        self.seconds = seconds
        self.owner = ""
        self._lock: Lock = client.lock(key, timeout=seconds, thread_local=False)
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self, wait: float | None = None) -> bool:
        """Take the lease: at once, or waiting up to ``wait`` seconds. True when taken (and now renewed)."""
        self.owner = new_owner()
        blocking = wait is not None and wait > 0
        if not self._lock.acquire(blocking=blocking, blocking_timeout=wait if blocking else None, token=self.owner):
            return False
        self._stop.clear()
        self._lost.clear()
        self._renewer = threading.Thread(target=self._renew, name=f"lease {self.key}", daemon=True)
        self._renewer.start()
        return True

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        try:
            self._lock.release()
        except redis.exceptions.LockError:
            self._lost.set()
            log.error("lease %s lapsed before it was released (held by %s)", self.key, self.owner)
        except redis.exceptions.ConnectionError as error:
            log.warning("lease %s not released, it lapses in %.0fs: %s", self.key, self.seconds, error)

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()
        if self.lost and kind is None:
            raise LeaseLost(f"lease {self.key} lapsed while its work ran; the work counts as failed")

    def _renew(self) -> None:
        period = self.seconds / RENEW_FRACTION
        while not self._stop.wait(period):
            try:
                self._lock.reacquire()
            except redis.exceptions.LockNotOwnedError:
                self._lost.set()
                log.error("lease %s lapsed and was lost (owner %s)", self.key, self.owner)
                return
            except redis.exceptions.RedisError as error:  # Redis unreachable: try again; it lapses if this lasts
                log.warning("lease %s not renewed: %s", self.key, error)


@dataclass(frozen=True)
class HeldLease:
    name: str  # the part after gh:<hub>:agent:lock:, e.g. "drain" or "type:managedcluster"
    owner: str
    held_seconds: float | None  # since the owner took it (None: a value not written by this module)
    expires_in: float  # seconds until it lapses unless renewed


def held_leases(client: redis.Redis, hub: str, now: float | None = None) -> list[HeldLease]:
    """The hub's leases held right now, by name."""
    moment = time.time() if now is None else now
    prefix = lease_prefix(hub)
    keys = sorted(text(key) for key in client.scan_iter(match=prefix + "*", count=100))
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
        pipe.pttl(key)
    replies = pipe.execute()
    held = []
    for index, key in enumerate(keys):
        value, pttl = replies[2 * index], replies[2 * index + 1]
        if value is None:
            continue  # released between the scan and the read
        owner = text(value)
        held.append(HeldLease(key[len(prefix) :], owner, _held_for(owner, moment), max(pttl, 0) / 1000))
    return held


def _held_for(owner: str, now: float) -> float | None:
    parts = owner.rsplit(":", 2)
    try:
        return max(0.0, now - float(parts[-2])) if len(parts) == 3 else None
    except ValueError:
        return None
