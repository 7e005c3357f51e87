"""The agent's beat keeps ticking when the hub's wall clock is stepped back (Celery's own would stop for as long as
the step, and the heartbeat with it)."""

from __future__ import annotations

import time

import time_machine
from celery.beat import ScheduleEntry, Scheduler

from agent_tasks.beat import SteadyScheduler
from agent_tasks.celery import app


class _Records:
    """Records when beat sends a task instead of sending it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[float] = []

    def apply_entry(self, entry: ScheduleEntry, producer: object = None) -> None:
        self.sent.append(time.monotonic())


class _Recording(_Records, SteadyScheduler):
    pass


class _CeleryRecording(_Records, Scheduler):
    pass


def _run(scheduler: _Recording | _CeleryRecording, seconds: float, step_after: float) -> tuple[int, float]:
    """Run beat's loop for ``seconds``, stepping the wall clock six minutes back after ``step_after``; returns the
    ticks sent after the step and the longest sleep asked for after it."""
    scheduler.setup_schedule()
    started = time.monotonic()
    traveller = None
    longest = 0.0
    try:
        while time.monotonic() - started < seconds:
            if traveller is None and time.monotonic() - started > step_after:
                traveller = time_machine.travel(time.time() - 360, tick=True)
                traveller.start()
                stepped = time.monotonic()
            interval = scheduler.tick()
            if traveller is not None:
                longest = max(longest, interval)
            if interval > 0:
                time.sleep(min(interval, 0.2))
    finally:
        if traveller is not None:
            traveller.stop()
    return sum(1 for at in scheduler.sent if at >= stepped), longest


def test_the_agents_beat_ticks_every_second_across_a_clock_stepped_back() -> None:
    ticks, longest = _run(_Recording(app=app, lazy=True), seconds=3.5, step_after=1.2)
    assert ticks >= 2 and longest <= 1.5


def test_celerys_own_beat_would_wait_for_the_clock_to_catch_up() -> None:
    """What the scheduler is for: Celery's asks to sleep the whole step (capped at its 5-minute max interval)."""
    _, longest = _run(_CeleryRecording(app=app, lazy=True), seconds=2.5, step_after=1.2)
    assert longest >= 60
