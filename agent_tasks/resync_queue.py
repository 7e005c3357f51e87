"""GlobalResyncQueue: the hub's FIFO of types waiting for a full resync, on a Redis list.

* FIFO: pushes go to the tail, the drain pops the head.
* Coalescing: a type already waiting is not queued again; it keeps its place (the order of first request).
* Safe with several processes: push and pop are single Lua scripts, so each is atomic.
* Observable: ``items()`` lists what waits and since when; ``length()`` for metrics.

Layout: ``gh:<hub>:resync:queue`` (list of short types) and ``gh:<hub>:resync:since`` (hash type -> enqueue time,
which doubles as the "already waiting" set). ``gh:<hub>:resync:answers:<type>`` holds the ids of the manager's
requests that the type's next full resync answers: noted before the type is queued, taken by the resync that sends
it, given back when that resync fails.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from agent_tasks.redisutil import text

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

# KEYS: queue list, since hash. Returns {type, enqueued_at} or nil.
_POP = """
local item = redis.call('LPOP', KEYS[1])
if not item then return nil end
local since = redis.call('HGET', KEYS[2], item)
redis.call('HDEL', KEYS[2], item)
return {item, since}
"""


@dataclass(frozen=True, slots=True)
class Waiting:
    type: str
    enqueued_at: float

    def waited(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.enqueued_at)


class ResyncQueue:
    def __init__(self, client: redis.Redis, hub: str) -> None:
        self._redis = client
        self._list = f"gh:{hub}:resync:queue"
        self._since = f"gh:{hub}:resync:since"
        self._push = client.register_script(_PUSH)
        self._pop = client.register_script(_POP)

    def push(self, types: Iterable[str], now: float | None = None) -> int:
        """Queue each type that is not already waiting; return how many were added."""
        names = list(types)
        if not names:
            return 0
        stamp = repr(time.time() if now is None else now)
        return int(self._push(keys=[self._list, self._since], args=[stamp, *names]))

    def pop(self) -> Waiting | None:
        reply = self._pop(keys=[self._list, self._since])
        if not reply:
            return None
        name, since = reply
        return Waiting(text(name), float(text(since)) if since is not None else time.time())

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

    def clear(self) -> None:
        self._redis.delete(self._list, self._since)

    def _answers_key(self, short_type: str) -> str:
        return f"{self._list.removesuffix(':queue')}:answers:{short_type}"

    def note_answers(self, types: Iterable[str], request_id: str) -> None:
        """The next full resync of each type answers the manager's request ``request_id`` (noted before queuing)."""
        if not request_id:
            return
        pipe = self._redis.pipeline(transaction=False)
        for short_type in types:
            pipe.sadd(self._answers_key(short_type), request_id)
        pipe.execute()

    def take_answers(self, short_type: str) -> list[str]:
        """The requests a full resync of the type starting now answers (they are no longer noted)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.smembers(self._answers_key(short_type))
        pipe.delete(self._answers_key(short_type))
        members, _ = pipe.execute()
        return sorted((text(member) for member in members), key=lambda i: (len(i), i))  # numeric ids: oldest first

    def give_back_answers(self, short_type: str, request_ids: Iterable[str]) -> None:
        """A resync that failed did not answer them: the next one will."""
        ids = list(request_ids)
        if ids:
            self._redis.sadd(self._answers_key(short_type), *ids)
