"""Operate one hub's agent (hub from ``HUB_NAME``, Redis from ``REDIS_URL``):

python -m agent_tasks.ctl status [--json]              whether the agent is live (worker, beat, ticks taken, last
                  [--dead-after 30s]                   send), queue, resyncs in flight and retrying, leases,
                                                       versions, next sync/resync times, last errors, the inventory
                                                       source (Kubernetes watches), and what looks stuck; exits 1
                                                       when the agent is dead (a healthcheck), 2 for an unknown hub
python -m agent_tasks.ctl set resync.managedcluster=1h  change an interval now, no restart (ctl unset to undo)
python -m agent_tasks.ctl unset resync.managedcluster
python -m agent_tasks.ctl resync managedcluster ...     queue full resyncs by hand
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from agent_tasks.config import AgentConfig
from agent_tasks.intervals import RESYNC_PREFIX, Intervals, parse_setting
from agent_tasks.kube.status import SourceStatus
from agent_tasks.lease import held_leases
from agent_tasks.liveness import DEAD_AFTER, judge, liveness_key, read_marks
from agent_tasks.redisutil import text
from agent_tasks.resync_queue import ResyncQueue
from agent_tasks.state import StateStore
from agent_tasks.types import STATUS_TYPES, status_type
from agent_tasks.versions import VersionStore
from globalhub.envconf import ConfigError, parse_duration

STUCK_WAIT = 60.0  # a type waiting this long in the queue (normally seconds) is worth a look
STUCK_RETRIES = 3  # failures in a row of one type's resync
EXIT_DEAD = 1
EXIT_REFUSED = 2
EXIT_UNKNOWN = 3  # Redis could not be asked: neither live nor dead can be told


class UnknownHub(Exception):
    """No agent has kept state for this hub in this Redis."""


def require_known_hub(client: redis.Redis, hub: str) -> None:
    """Refuse a hub no agent ever ran for here: a typo in ``HUB_NAME`` or the wrong Redis would otherwise read as
    an empty, healthy-looking report. An agent's start writes its per-type state; its processes write liveness."""
    if not client.exists(StateStore.key(hub), liveness_key(hub)):
        where = client.connection_pool.connection_kwargs
        raise UnknownHub(
            f"no agent state for hub {hub!r} in Redis {where.get('host', '?')}:{where.get('port', '?')} "
            f"db {where.get('db', 0)} (check HUB_NAME and REDIS_URL; has this hub's worker ever started?)"
        )


def agent_liveness(
    client: redis.Redis, hub: str, states: dict[str, Any], now: float, dead_after: float
) -> dict[str, Any]:
    """Live or dead, from the worker's, beat's and the ticks' marks, with the last confirmed send of any type."""
    verdict = judge(read_marks(client, hub), now, dead_after)
    sends = [(state.last_sent, name) for name, state in states.items() if state.last_sent is not None]
    last_sent_at, last_sent_type = max(sends) if sends else (None, None)
    return {
        "live": verdict.live,
        "dead_after_seconds": dead_after,
        "seconds_since": {name: _rounded(age) for name, age in verdict.ages.items()},
        "problems": verdict.reasons(),
        "fresh": verdict.summary(),
        "last_send_at": _at(last_sent_at) if last_sent_at is not None else None,
        "last_send_type": last_sent_type,
        "last_send_seconds_ago": _rounded(now - last_sent_at) if last_sent_at is not None else None,
    }


def status(client: redis.Redis, hub: str, now: float | None = None, dead_after: float = DEAD_AFTER) -> dict[str, Any]:
    """Everything an operator asks about one agent, as plain data."""
    moment = time.time() if now is None else now
    intervals = Intervals(client, hub).snapshot()
    states = StateStore(client, hub).all()
    versions = VersionStore(client, hub).all()
    types = {}
    for name, kind in STATUS_TYPES.items():
        state = states.get(name)
        sync_every = intervals[name]
        resync_every = intervals[RESYNC_PREFIX + name]
        last_sync = state.last_sync if state else None
        last_resync = state.last_resync if state else None
        types[name] = {
            "kind": kind.kind.value,
            "version": str(versions[name]) if name in versions else "0.0",
            "sync_interval": _duration(sync_every),
            "resync_interval": _duration(resync_every) if kind.resyncable else None,
            "next_sync_at": _at(last_sync + sync_every.total_seconds()) if last_sync else "now",
            "next_resync_at": (_at(last_resync + resync_every.total_seconds()) if last_resync else "now")
            if kind.resyncable
            else None,
            "last_sent_at": _at(state.last_sent) if state and state.last_sent else None,
            "sent_messages": state.sent_messages if state else 0,
            "last_error": state.last_error if state and state.last_error else None,
            "last_error_at": _at(state.last_error_at) if state and state.last_error_at else None,
        }
    resyncs = ResyncQueue(client, hub)
    queue = [{"type": w.type, "waiting_seconds": round(w.waited(moment), 3)} for w in resyncs.items()]
    leases = [
        {
            "name": lease.name,
            "owner": lease.owner,
            "held_seconds": _rounded(lease.held_seconds),
            "expires_in_seconds": round(lease.expires_in, 3),
        }
        for lease in held_leases(client, hub, moment)
    ]
    drain_owner = next((lease["owner"] for lease in leases if lease["name"] == "drain"), None)
    in_flight = [
        {
            "type": entry.type,
            "owner": entry.owner,
            "running_seconds": round(moment - entry.started_at, 3),
            "owner_alive": entry.owner == drain_owner,
        }
        for entry in resyncs.in_flight()
    ]
    retries = [
        {
            "type": retry.type,
            "failures_in_a_row": retry.attempts,
            "next_try_in_seconds": round(retry.at - moment, 3),
            "last_error": states[retry.type].last_error if retry.type in states else None,
        }
        for retry in resyncs.retries()
    ]
    listener = {text(k): text(v) for k, v in client.hgetall(f"gh:{hub}:agent:listener").items()}
    report = {
        "hub": hub,
        "agent": agent_liveness(client, hub, states, moment, dead_after),
        "queue": queue,
        "in_flight": in_flight,
        "retrying": retries,
        "leases": leases,
        "queue_repairs": resyncs.repairs(),
        "types": types,
        "interval_settings": {k: _duration(v) for k, v in Intervals(client, hub).runtime_settings().items()},
        "listener": listener,
        "source": SourceStatus(client, hub).read(moment),
    }
    report["problems"] = problems(report)
    return report


def problems(report: dict[str, Any]) -> list[str]:
    """What in a status report looks stuck, in words (empty when all is well)."""
    found = []
    for entry in report["in_flight"]:
        if not entry["owner_alive"]:
            found.append(
                f"resync of {entry['type']} was interrupted (its drain is gone); the next tick queues it again"
            )
    for retry in report["retrying"]:
        if retry["failures_in_a_row"] >= STUCK_RETRIES:
            found.append(
                f"resync of {retry['type']} failed {retry['failures_in_a_row']} times in a row: {retry['last_error']}"
            )
    for item in report["queue"]:
        if item["waiting_seconds"] >= STUCK_WAIT:
            found.append(f"{item['type']} has waited {item['waiting_seconds']:.0f}s in the resync queue")
    for name, row in report["types"].items():
        if row["last_error"] and name not in {retry["type"] for retry in report["retrying"]}:
            found.append(f"{name}: {row['last_error']}")
    source = report.get("source")
    if source is not None and not source["running"]:
        found.append("the inventory watcher is not running")
    return found


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _at(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def render_agent(agent: dict[str, Any]) -> str:
    """``agent: live (...)`` or ``agent: DEAD (no tick run by the worker for 95 s; ...; last send ...)``."""
    if agent["last_send_at"] is None:
        send = "no send since the agent started"
    else:
        send = (
            f"last send {agent['last_send_at']} ({agent['last_send_type']}, {agent['last_send_seconds_ago']:.0f} s ago)"
        )
    if agent["live"]:
        return f"agent: live ({agent['fresh']}; {send})"
    return f"agent: DEAD ({'; '.join([*agent['problems'], *([agent['fresh']] if agent['fresh'] else []), send])})"


def render(report: dict[str, Any]) -> str:
    lines = [f"hub {report['hub']}", render_agent(report["agent"])]
    queue = report["queue"]
    waiting = ", ".join(f"{item['type']} ({item['waiting_seconds']:.1f}s)" for item in queue)
    lines.append(f"resync queue: {len(queue)} waiting{': ' + waiting if queue else ''}")
    for entry in report["in_flight"]:
        state = "running" if entry["owner_alive"] else "INTERRUPTED"
        lines.append(f"in flight: {entry['type']} {state} for {entry['running_seconds']:.1f}s ({entry['owner']})")
    for retry in report["retrying"]:
        lines.append(
            f"retrying: {retry['type']} after {retry['failures_in_a_row']} failure(s) in a row, "
            f"next try in {max(retry['next_try_in_seconds'], 0):.0f}s"
        )
    for lease in report["leases"]:
        held = f"held {lease['held_seconds']:.1f}s" if lease["held_seconds"] is not None else "held"
        lines.append(f"lease {lease['name']}: {held} by {lease['owner']}, lapses in {lease['expires_in_seconds']:.1f}s")
    if report["queue_repairs"]:
        lines.append(f"queue index repairs so far: {report['queue_repairs']}")
    lines.append(f"{'type':<24} {'version':<10} {'sync':<6} {'resync':<7} {'next sync':<26} {'next resync':<26} error")
    for name, row in report["types"].items():
        lines.append(
            f"{name:<24} {row['version']:<10} {row['sync_interval']:<6} {row['resync_interval'] or '-':<7} "
            f"{row['next_sync_at']:<26} {row['next_resync_at'] or '-':<26} {row['last_error'] or ''}"
        )
    if report["interval_settings"]:
        lines.append(
            "run-time interval settings: " + ", ".join(f"{k}={v}" for k, v in report["interval_settings"].items())
        )
    if report["listener"]:
        lines.append("spec listener: " + ", ".join(f"{k}={v}" for k, v in sorted(report["listener"].items())))
    lines.extend(render_source(report.get("source")))
    lines.append("problems: " + ("none" if not report["problems"] else ""))
    lines.extend(f"  - {problem}" for problem in report["problems"])
    return "\n".join(lines)


def render_source(source: dict[str, Any] | None) -> list[str]:
    """The inventory source's lines: one per watched resource, with its connection, counts, ages and error."""
    if source is None:
        return ["inventory source: no Kubernetes watcher has run for this hub (the simulator fills its inventory)"]
    running = "running" if source["running"] else f"NOT RUNNING (last update {source['updated_seconds_ago']}s ago)"
    lines = [f"inventory source: {source['source']} {source['server']} via {source['credentials']}, {running}"]
    for name, row in sorted(source["resources"].items()):
        event = row.get("last_event_age_seconds")
        state = "connected" if row.get("connected") else "DISCONNECTED"
        parts = [
            f"  {name:<16} {state:<12} objects {row.get('objects', 0)}",
            f"last event {f'{event}s ago' if event is not None else 'none'}",
            f"relists {row.get('relists', 0)}",
            f"errors {row.get('errors', 0)}",
        ]
        if row.get("last_error") and not row.get("connected"):
            parts.append(f"last error ({row.get('last_error_age_seconds')}s ago): {row['last_error']}")
        lines.append(", ".join(parts))
    if source["types"]:
        lines.append("  inventory: " + ", ".join(f"{k} {v}" for k, v in sorted(source["types"].items())))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agent_tasks.ctl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("status", help="show the agent's state; exit 1 when it is dead")
    show.add_argument("--json", action="store_true")
    show.add_argument(
        "--dead-after",
        default=f"{DEAD_AFTER:g}s",
        help="a liveness mark older than this means dead (default %(default)s)",
    )
    setting = commands.add_parser("set", help="set intervals at run time, e.g. resync.managedcluster=1h")
    setting.add_argument("settings", nargs="+")
    unsetting = commands.add_parser("unset", help="drop run-time interval settings")
    unsetting.add_argument("keys", nargs="+")
    resync = commands.add_parser("resync", help="queue full resyncs")
    resync.add_argument("types", nargs="+")
    args = parser.parse_args(argv)

    config = AgentConfig.from_env()
    client = redis.Redis.from_url(config.redis_url)
    try:
        if args.command == "status":
            dead_after = parse_duration(args.dead_after).total_seconds()
            require_known_hub(client, config.hub_name)
            report = status(client, config.hub_name, dead_after=dead_after)
            print(json.dumps(report, indent=2) if args.json else render(report))
            return 0 if report["agent"]["live"] else EXIT_DEAD
        elif args.command == "set":
            intervals = Intervals(client, config.hub_name)
            for item in args.settings:  # all or nothing: check every setting before writing one
                parse_setting(item)
            for item in args.settings:
                key, value = intervals.set(item)
                print(f"{config.hub_name}: {key} = {_duration(value)}")
        elif args.command == "unset":
            intervals = Intervals(client, config.hub_name)
            for key in args.keys:
                print(f"{config.hub_name}: {key} {'back to its default' if intervals.unset(key) else 'was not set'}")
        else:
            kinds = [status_type(name) for name in args.types]
            refused = [kind.short for kind in kinds if not kind.resyncable]
            if refused:
                raise ConfigError(f"{', '.join(refused)} cannot be resynced (it has no state to resend)")
            names = [kind.short for kind in kinds]
            added = ResyncQueue(client, config.hub_name).push(names)
            print(f"{config.hub_name}: {added} of {len(names)} queued (the others were already waiting)")
    except (ConfigError, KeyError, UnknownHub) as error:
        print(f"error: {error.args[0] if isinstance(error, KeyError) else error}", file=sys.stderr)
        return EXIT_REFUSED
    except redis.RedisError as error:
        print(f"error: the hub's Redis cannot be read ({error}): the agent's state is unknown", file=sys.stderr)
        return EXIT_UNKNOWN
    return 0


if __name__ == "__main__":
    sys.exit(main())
