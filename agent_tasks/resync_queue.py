"""GlobalResyncQueue: the hub's FIFO of types waiting for a full resync, on a Redis list.

* FIFO: pushes go to the tail, the drain pops the head.
* Coalescing: a type already waiting is not queued again; it keeps its place (the order of first request).
* Safe with several processes: push, pop, settle and recover are single Lua scripts, so each is atomic.
* Nothing popped is lost: a pop moves the type to the **in-flight** hash, and only :meth:`ResyncQueue.done` removes
  it. The drain holds its lease (``agent_tasks/lease.py``) while a type is in flight, so whoever takes the lease
  next finds what a dead drain left there and puts it back at the head (:meth:`ResyncQueue.recover`).
* The index cannot orphan: :meth:`ResyncQueue.settle` (every tick) makes the list and the ``since`` hash agree
  again, whichever of them lost entries, and queues any type with requests waiting for an answer. A lost queue
  costs at most one tick.
* Failed resyncs are retried with backoff: :meth:`ResyncQueue.retry_later` parks the type in the **retry** set
  until its time comes, and ``settle`` queues it then.
* Observable: ``items()``, ``in_flight()`` and ``retries()`` for ``ctl status`` and the metrics.

Layout (``gh:<hub>:resync:…``): ``queue`` (list of short types), ``since`` (hash type -> enqueue time, which
doubles as the "already waiting" set), ``inflight`` (hash type -> ``<enqueued at>|<started at>|<owner>``),
``retry`` (sorted set type -> when to try again), ``attempts`` (hash type -> failures in a row), ``repairs``
(count of index repairs), and ``answers:<type>``: the ids of the manager's requests that the type's next full
resync answers, noted before the type is queued and removed only when a resync that carried them succeeded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from agent_tasks.redisutil import text

log = logging.getLogger(__name__)

RETRY_FIRST = 1.0  # seconds before the first retry of a failed resync; doubled per failure in a row
RETRY_MAX = 60.0

# KEYS: queue list, since hash. ARGV: now, type... Returns how many types were added.
_PUSH = """
local added = 0
for i = 2, #ARGV do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[1]) == 1 then
    redis.call('RPUSH', KEYS[1], ARGV[i])
    added = added + 1
  end
end
return added
"""

# KEYS: queue list, since hash, in-flight hash. ARGV: now, owner. Returns {type, enqueued_at} or nil.
_POP = """
local item = redis.call('LPOP', KEYS[1])
if not item then return nil end
local since = redis.call('HGET', KEYS[2], item) or ARGV[1]
redis.call('HDEL', KEYS[2], item)
redis.call('HSET', KEYS[3], item, since .. '|' .. ARGV[1] .. '|' .. ARGV[2])
return {item, since}
"""

# Puts every in-flight type back at the head of the queue (KEYS[1] list, KEYS[2] since, KEYS[3] in-flight), the
# earliest started first; the types put back are in `recovered`.
_RECOVER_BODY = """
local entries = redis.call('HGETALL', KEYS[3])
local back = {}
for i = 1, #entries, 2 do
  local since, started = string.match(entries[i + 1], '^([^|]*)|([^|]*)|')
  table.insert(back, {entries[i], since or '0', tonumber(started) or 0})
end
table.sort(back, function(a, b) return a[3] > b[3] end)
for _, entry in ipairs(back) do
  redis.call('HDEL', KEYS[3], entry[1])
  if redis.call('HSETNX', KEYS[2], entry[1], entry[2]) == 1 then
    redis.call('LPUSH', KEYS[1], entry[1])
  end
  table.insert(recovered, entry[1])
end
"""

# KEYS: queue list, since hash, in-flight hash. Returns the types put back.
_RECOVER = "local recovered = {}\n" + _RECOVER_BODY + "return recovered\n"

# KEYS: queue list, since hash, in-flight hash, retry zset, repairs counter, drain lease, answers:<type>...
# ARGV: now, type... (the types whose answers keys follow, in the same order).
# Puts back what is in flight when no drain holds the lease (its drain died), makes list and since agree (one
# entry each, in list order, then orphans of the hash by enqueue time), queues types with unanswered requests
# that wait nowhere, and queues retries that are due (or lie further ahead than any backoff: the wall clock was
# stepped back). Returns {length, repairs, recovered types}.
_SETTLE = (
    """
local recovered = {}
if redis.call('EXISTS', KEYS[6]) == 0 then
"""
    + _RECOVER_BODY
    + """
end
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local listed, order, rewrite, repairs = {}, {}, false, 0
for _, item in ipairs(items) do
  if listed[item] then rewrite = true; repairs = repairs + 1 else listed[item] = true; table.insert(order, item) end
end
for _, item in ipairs(order) do
  if redis.call('HSETNX', KEYS[2], item, ARGV[1]) == 1 then repairs = repairs + 1 end
end
local since = redis.call('HGETALL', KEYS[2])
local orphans = {}
for i = 1, #since, 2 do
  if not listed[since[i]] then table.insert(orphans, {since[i], tonumber(since[i + 1]) or 0}) end
end
table.sort(orphans, function(a, b) return a[2] < b[2] end)
for _, orphan in ipairs(orphans) do
  listed[orphan[1]] = true; table.insert(order, orphan[1]); rewrite = true; repairs = repairs + 1
end
for i = 2, #ARGV do
  local kind = ARGV[i]
  if not listed[kind] and redis.call('HEXISTS', KEYS[3], kind) == 0 and redis.call('ZSCORE', KEYS[4], kind) == false
     and redis.call('SCARD', KEYS[5 + i]) > 0 then
    redis.call('HSET', KEYS[2], kind, ARGV[1]); listed[kind] = true; table.insert(order, kind)
    rewrite = true; repairs = repairs + 1
  end
end
if rewrite then
  redis.call('DEL', KEYS[1])
  if #order > 0 then redis.call('RPUSH', KEYS[1], unpack(order)) end
end
if repairs > 0 then redis.call('INCRBY', KEYS[5], repairs) end
local now, retries = tonumber(ARGV[1]), redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES')
for i = 1, #retries, 2 do
  local kind, at = retries[i], tonumber(retries[i + 1])
  if at <= now or at > now + RETRY_MAX then  -- due, or beyond any backoff: the clock was stepped back
    redis.call('ZREM', KEYS[4], kind)
    if redis.call('HSETNX', KEYS[2], kind, ARGV[1]) == 1 then redis.call('RPUSH', KEYS[1], kind) end
  end
end
return {redis.call('LLEN', KEYS[1]), repairs, recovered}
""".replace("RETRY_MAX", repr(RETRY_MAX + 1.0))
)


@dataclass(frozen=True, slots=True)
class Waiting:
    type: str
    enqueued_at: float

    def waited(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.enqueued_at)


@dataclass(frozen=True, slots=True)
class InFlight:
    type: str
    enqueued_at: float
    started_at: float
    owner: str  # the drain lease's value when it started


@dataclass(frozen=True, slots=True)
class Retry:
    type: str
    attempts: int  # failures in a row
    at: float  # when it is queued again


class ResyncQueue:
    def __init__(self, client: redis.Redis, hub: str) -> None:
        self._redis = client
        base = f"gh:{hub}:resync"
        self._base = base
        self._list = f"{base}:queue"
        self._since = f"{base}:since"
        self._inflight = f"{base}:inflight"
        self._retry = f"{base}:retry"
        self._attempts = f"{base}:attempts"
        self._repairs = f"{base}:repairs"
        self._push = client.register_script(_PUSH)
        self._pop = client.register_script(_POP)
        self._recover = client.register_script(_RECOVER)
        self._settle = client.register_script(_SETTLE)

    # --- the queue ---------------------------------------------------------------------------------------------

    def push(self, types: Iterable[str], now: float | None = None) -> int:
        """Queue each type that is not already waiting; return how many were added."""
        names = list(types)
        if not names:
            return 0
        stamp = repr(time.time() if now is None else now)
        return int(self._push(keys=[self._list, self._since], args=[stamp, *names]))

    def pop(self, owner: str = "", now: float | None = None) -> Waiting | None:
        """Take the head; it stays in flight (for ``owner``) until :meth:`done`."""
        moment = time.time() if now is None else now
        reply = self._pop(keys=[self._list, self._since, self._inflight], args=[repr(moment), owner])
        if not reply:
            return None
        name, since = reply
        return Waiting(text(name), float(text(since)))

    def done(self, short_type: str) -> None:
        """The in-flight type was sent, re-queued or parked for a retry: it is no longer in flight."""
        self._redis.hdel(self._inflight, short_type)

    def recover(self) -> list[str]:
        """Put what a dead drain left in flight back at the head of the queue; call holding the drain lease."""
        return [text(name) for name in self._recover(keys=[self._list, self._since, self._inflight])]

    def settle(self, drain_lease: str, answerable: Sequence[str] = (), now: float | None = None) -> int:
        """Make the queue whole again; return its length. Call every tick.

        * What is in flight while nobody holds ``drain_lease`` (the key of the drain's lease) goes back to the head;
        * the list and the ``since`` index are made to agree;
        * a type of ``answerable`` with requests noted for it but queued nowhere (lost with the queue) is queued;
        * retries that are due are queued.
        """
        moment = time.time() if now is None else now
        keys = [self._list, self._since, self._inflight, self._retry, self._repairs, drain_lease]
        keys += [self._answers_key(name) for name in answerable]
        length, repairs, recovered = self._settle(keys=keys, args=[repr(moment), *answerable])
        if recovered:
            log.warning(
                "%s: the resync of %s was interrupted (its drain died); queued again at the head",
                self._base,
                ", ".join(text(name) for name in recovered),
            )
        if repairs:
            log.warning("%s: resync queue index repaired (%d entries); it is consistent again", self._base, repairs)
        return int(length)

    def length(self) -> int:
        return int(self._redis.llen(self._list))

    def items(self) -> list[Waiting]:
        """What waits, in order, with enqueue times; list and times read together (one MULTI)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.lrange(self._list, 0, -1)
        pipe.hgetall(self._since)
        raw_names, raw_stamps = pipe.execute()
        stamps = {text(k): float(text(v)) for k, v in raw_stamps.items()}
        now = time.time()
        return [Waiting(text(n), stamps.get(text(n), now)) for n in raw_names]

    def in_flight(self) -> list[InFlight]:
        entries = []
        for raw_name, raw_value in self._redis.hgetall(self._inflight).items():
            since, started, owner = text(raw_value).split("|", 2)
            entries.append(InFlight(text(raw_name), float(since), float(started), owner))
        return sorted(entries, key=lambda entry: entry.started_at)

    def repairs(self) -> int:
        return int(self._redis.get(self._repairs) or 0)

    def clear(self) -> None:
        """Forget what waits, is in flight or is parked for a retry (an agent start queues every type anew)."""
        self._redis.delete(self._list, self._since, self._inflight, self._retry, self._attempts)

    # --- retries -----------------------------------------------------------------------------------------------

    def retry_later(self, short_type: str, now: float | None = None) -> Retry:
        """A resync of the type failed: queue it again after a backoff that doubles with each failure in a row."""
        moment = time.time() if now is None else now
        attempts = int(self._redis.hincrby(self._attempts, short_type, 1))
        at = moment + min(RETRY_FIRST * 2 ** (attempts - 1), RETRY_MAX)
        self._redis.zadd(self._retry, {short_type: at})
        return Retry(short_type, attempts, at)

    def succeeded(self, short_type: str) -> None:
        """A resync of the type went through: no retry is pending and the failure count starts over."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.zrem(self._retry, short_type)
        pipe.hdel(self._attempts, short_type)
        pipe.execute()

    def retries(self) -> list[Retry]:
        pipe = self._redis.pipeline(transaction=True)
        pipe.zrange(self._retry, 0, -1, withscores=True)
        pipe.hgetall(self._attempts)
        raw_retries, raw_attempts = pipe.execute()
        attempts = {text(k): int(text(v)) for k, v in raw_attempts.items()}
        return [Retry(text(name), attempts.get(text(name), 0), float(at)) for name, at in raw_retries]

    def attempts(self) -> dict[str, int]:
        """Failures in a row per type (types that last succeeded are absent)."""
        return {text(k): int(text(v)) for k, v in self._redis.hgetall(self._attempts).items()}

    # --- the requests a resync answers -------------------------------------------------------------------------

    def _answers_key(self, short_type: str) -> str:
        return f"{self._base}:answers:{short_type}"

    def note_answers(self, types: Iterable[str], request_id: str) -> None:
        """The next full resync of each type answers the manager's request ``request_id`` (noted before queuing)."""
        if not request_id:
            return
        pipe = self._redis.pipeline(transaction=False)
        for short_type in types:
            pipe.sadd(self._answers_key(short_type), request_id)
        pipe.execute()

    def answers(self, short_type: str) -> list[str]:
        """The requests a full resync of the type starting now answers, oldest first (numeric ids)."""
        members = self._redis.smembers(self._answers_key(short_type))
        return sorted((text(member) for member in members), key=lambda i: (len(i), i))

    def answered(self, short_type: str, request_ids: Iterable[str]) -> None:
        """A resync that carried these ids went through: they are answered (ids noted since then stay)."""
        ids = list(request_ids)
        if ids:
            self._redis.srem(self._answers_key(short_type), *ids)
