"""Whether a hub's agent is alive, from marks its processes leave in the hub's Redis (``gh:<hub>:agent:alive``).

Three marks, each the wall-clock time it was last written:

* ``worker``: the Celery worker's main process, every :data:`WORKER_MARK_EVERY` seconds (a bootstep's timer, in
  ``agent_tasks/celery.py``): the worker runs, whether or not there are ticks to take;
* ``beat``: beat sent ``agent.tick`` to the broker (every second);
* ``tick``: a pool process ran a tick (``agent_tasks/tasks.py``): ticks are taken, not only sent.

The agent is live when all three are younger than the dead-after limit. Which one is old says where to look: a
dead beat leaves ``worker`` fresh and both ``beat`` and ``tick`` old; a dead worker leaves ``beat`` fresh; a worker
whose pool is stuck leaves only ``tick`` old. The marks are kept without expiry, so a dead agent's report says how
long ago each stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from agent_tasks.redisutil import text

WORKER_MARK_EVERY = 2.0
DEAD_AFTER = 30.0  # seconds: a tick is sent every second; a long delta and a long resync may hold both pool slots
WORKER, BEAT, TICK = "worker", "beat", "tick"
MARKS = (WORKER, BEAT, TICK)
_WHAT = {
    WORKER: "worker seen",
    BEAT: "tick sent by beat",
    TICK: "tick run by the worker",
}


def liveness_key(hub: str) -> str:
    return f"gh:{hub}:agent:alive"


def mark(client: redis.Redis, hub: str, which: str, now: float | None = None) -> None:
    """Note that a process of the agent is at work now."""
    client.hset(liveness_key(hub), which, repr(time.time() if now is None else now))


def read_marks(client: redis.Redis, hub: str) -> dict[str, float]:
    return {text(k): float(text(v)) for k, v in client.hgetall(liveness_key(hub)).items() if text(k) in MARKS}


@dataclass(frozen=True)
class Verdict:
    live: bool
    ages: dict[str, float | None]  # seconds since each mark; None: never written
    stale: list[str]  # the marks older than the limit (or missing), in MARKS order

    def reasons(self) -> list[str]:
        """Each stale mark in words: ``no tick run by the worker for 95 s``."""
        return [_stale_reason(name, self.ages[name]) for name in self.stale]

    def summary(self) -> str:
        """The fresh marks in words: ``worker seen 1 s ago, tick sent by beat 0 s ago``."""
        return ", ".join(f"{_WHAT[name]} {self.ages[name]:.0f} s ago" for name in MARKS if name not in self.stale)


def judge(marks: dict[str, float], now: float, dead_after: float = DEAD_AFTER) -> Verdict:
    ages: dict[str, float | None] = {name: max(now - marks[name], 0.0) if name in marks else None for name in MARKS}
    stale = [name for name, age in ages.items() if age is None or age > dead_after]
    return Verdict(live=not stale, ages=ages, stale=stale)


def _stale_reason(name: str, age: float | None) -> str:
    return f"no {_WHAT[name]} yet" if age is None else f"no {_WHAT[name]} for {age:.0f} s"
