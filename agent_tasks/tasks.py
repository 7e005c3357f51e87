"""The agent's Celery tasks: thin adapters over the emitter."""

from __future__ import annotations

from typing import Any

from agent_tasks.celery import app
from agent_tasks.runtime import get_runtime
from agent_tasks.types import OBJECT_TYPES


@app.task(name="agent.resync")
def resync(short_type: str) -> dict[str, Any]:
    """Send the full state of one type now (a ``managedcluster`` resync, say)."""
    kind = OBJECT_TYPES.get(short_type)
    if kind is None:
        raise ValueError(f"unknown resync type {short_type!r}; known: {', '.join(OBJECT_TYPES)}")
    runtime = get_runtime()
    with runtime.redis.lock(f"gh:{runtime.config.hub_name}:agent:lock:{short_type}", timeout=900):
        report = runtime.emitter.resync(kind)
    return {"objects": report.objects, "messages": report.messages, "bytes": report.bytes}
