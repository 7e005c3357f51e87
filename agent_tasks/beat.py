"""Beat that keeps ticking when the hub's wall clock is stepped back (NTP, an operator).

Celery's beat keeps its next runs as wall-clock times and counts each interval from the last run. After a step
back, both lie in the future: beat would send nothing until the clock caught up, and the agent's ticks, with its
deltas and heartbeat, would stop for as long as the step (the manager would then judge a live hub dead).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from celery.beat import Scheduler
from celery.schedules import schedstate, schedule

from agent_tasks.engine import CLOCK_STEP


class SteadyInterval(schedule):
    """Celery's fixed interval, due at once when its last run lies ahead of the clock."""

    def is_due(self, last_run_at: datetime) -> schedstate:
        ahead = self.maybe_make_aware(last_run_at) - self.maybe_make_aware(self.now())
        if ahead > timedelta(seconds=CLOCK_STEP):
            return schedstate(is_due=True, next=self.seconds)
        return super().is_due(last_run_at)


class SteadyScheduler(Scheduler):
    """Celery's in-memory scheduler, whose queue of next runs is rebuilt when its head lies further ahead than any
    interval allows (the entries then judge themselves: see :class:`SteadyInterval`)."""

    _heap: list[Any] | None  # Celery's: (when, priority, entry) of each entry's next run, soonest first

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if self._heap:
            when, _, entry = self._heap[0]
            longest = max((getattr(e.schedule, "seconds", 0.0) for e in self.schedule.values()), default=0.0)
            if when - self._when(entry, 0) > longest + CLOCK_STEP:  # type: ignore[attr-defined]
                self._heap = None  # populated again by the tick
        return float(super().tick(*args, **kwargs))
