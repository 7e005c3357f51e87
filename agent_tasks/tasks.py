"""The agent's Celery tasks: thin adapters over :class:`agent_tasks.engine.Agent`."""

from __future__ import annotations

from agent_tasks.celery import app
from agent_tasks.liveness import TICK, mark
from agent_tasks.runtime import get_runtime


# The ticks are acknowledged on receipt: a tick lost with a crashed worker is replaced by the next one a second
# later, and late acknowledgement cost the idle agent a quarter of its Redis commands.
@app.task(name="agent.drain", ignore_result=True, acks_late=False)
def drain() -> str | None:
    """Every second (and when nudged): pop one queued type and send its full state.

    A drain that found work schedules the next one for when it is allowed, so a queue of four types takes four
    seconds, not four seconds plus the time each resync took plus waits for beat's ticks.
    """
    agent = get_runtime().agent
    report = agent.drain()
    wait = agent.next_drain_in()
    if report is not None and wait is not None:  # only the drain that popped schedules: one chain at a time
        drain.apply_async(countdown=wait, expires=wait + 5)
    return None if report is None else report.type


@app.task(name="agent.tick", ignore_result=True, acks_late=False)
def tick() -> list[str]:
    """Every second: start a drain if a type waits, then run the due delta syncs, heartbeat and periodic resyncs.

    One beat entry instead of two halves the idle agent's Celery overhead; the drain still runs as its own task.
    """
    runtime = get_runtime()
    mark(runtime.redis, runtime.config.hub_name, TICK)  # ticks are taken: the worker's pool works (ctl status)
    agent = runtime.agent
    wait = agent.next_drain_in()
    if wait is not None:
        drain.apply_async(countdown=wait, expires=wait + 5)
    result = agent.sync()
    return [report.type for report in result.sent]


@app.task(name="agent.resync", ignore_result=True)
def resync(short_type: str) -> int:
    """Queue a full resync of one type (what a manager request or an operator asks for)."""
    added = get_runtime().agent.request_resync([short_type])
    if added:
        drain.delay()
    return added
