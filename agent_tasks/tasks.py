"""The agent's Celery tasks: thin adapters over :class:`agent_tasks.engine.Agent`."""

from __future__ import annotations

from agent_tasks.celery import app
from agent_tasks.runtime import get_runtime


# The ticks are acknowledged on receipt: a tick lost with a crashed worker is replaced by the next one a second
# later, and late acknowledgement cost the idle agent a quarter of its Redis commands.
@app.task(name="agent.drain", ignore_result=True, acks_late=False)
def drain() -> str | None:
    """Every second: pop one queued type and send its full state."""
    report = get_runtime().agent.drain()
    return None if report is None else report.type


@app.task(name="agent.sync", ignore_result=True, acks_late=False)
def sync() -> list[str]:
    """Every second: due delta syncs, heartbeat and periodic resyncs."""
    result = get_runtime().agent.sync()
    return [report.type for report in result.sent]


@app.task(name="agent.resync", ignore_result=True)
def resync(short_type: str) -> int:
    """Queue a full resync of one type (what a manager request or an operator asks for)."""
    return get_runtime().agent.request_resync([short_type])
