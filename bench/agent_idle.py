"""Idle agent: CPU and memory of worker + beat + spec listener while nothing changes.

    .venv/bin/python bench/agent_idle.py                      # 200 clusters, 20 policies, 60 s
    .venv/bin/python bench/agent_idle.py --seconds 120 --lean-worker

Populates a fresh hub with the simulator (no churn), starts the agent's three processes as in docker-compose, waits
for the startup resyncs, lets it settle, then reads the CPU ticks (user + system, from /proc/<pid>/stat) of every
process of each process group over ``--seconds``: the agent ticks twice a second, sends the heartbeat every
minute and has nothing else to do. Target (DESIGN "Performance targets"): all three together <= 3 % of one core.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import time
from typing import Any

import redis

from agent_tasks.inventory import RedisInventory
from agent_tasks.simulate import populate
from agent_tasks.state import StateStore
from agent_tasks.versions import VersionStore
from bench.common import (
    BEAT,
    CLK_TCK,
    LISTENER,
    WORKER,
    AgentProcesses,
    BenchNames,
    LogFollower,
    ProcStat,
    PySpy,
    Report,
    agent_env,
    beat_argv,
    cleanup_redis,
    cmdline,
    default_kafka,
    default_redis_url,
    delete_topics,
    group_members,
    kafka_trouble,
    listener_argv,
    log_dir_for,
    mib,
    progress,
    project_functions,
    pss_kb,
    redis_commands,
    redis_url_with_db,
    startup_done,
    status_kb,
    stop_on_sigterm,
    top_frames,
    wait_until,
    worker_argv,
)

TARGET_PERCENT = 3.0
LEAN_FLAGS = ["--without-heartbeat", "--without-gossip", "--without-mingle"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clusters", type=int, default=200)
    p.add_argument("--policies", type=int, default=20)
    p.add_argument("--clusters-per-policy", type=int, default=None)
    p.add_argument("--seconds", type=float, default=60.0, help="measuring window (default 60)")
    p.add_argument("--settle", type=float, default=10.0, help="wait after the startup resyncs (default 10)")
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--redis-db", type=int, default=12, help="Redis database for this run (default 12)")
    p.add_argument("--lean-worker", action="store_true", help=f"worker with {' '.join(LEAN_FLAGS)}")
    p.add_argument("--worker-arg", action="append", default=[], help="extra argument for the celery worker")
    p.add_argument("--no-listener", action="store_true", help="worker and beat only")
    p.add_argument(
        "--redis-monitor", type=float, default=5.0, help="after the window, count the agent's Redis commands (0: off)"
    )
    p.add_argument(
        "--py-spy", default=None, help="path to py-spy: profile each process during the window (adds some CPU)"
    )
    p.add_argument("--log-dir", default=None, help="where the processes' logs go (default /tmp/<tag>)")
    p.add_argument("--keep", action="store_true", help="keep the Redis keys and topics")
    return p.parse_args(argv)


def cpu_deltas(before: dict[int, ProcStat], after: dict[int, ProcStat]) -> dict[int, int]:
    """Ticks each process used between two readings (a process that started in between: all of its ticks).

    ``total_ticks`` includes the time of waited-for children, so a pool process replaced in between still counts.
    """
    return {pid: stat.total_ticks - (before[pid].total_ticks if pid in before else 0) for pid, stat in after.items()}


def percent(ticks: int, seconds: float) -> float:
    return round(100.0 * ticks / CLK_TCK / seconds, 2)


def measure(agent: AgentProcesses, client: redis.Redis, hub: str, seconds: float, py_spy: str | None) -> dict[str, Any]:
    """CPU ticks of every process of each group over ``seconds``; RSS at the end; what was sent meanwhile."""
    worker_log = LogFollower(agent.processes[WORKER].log_path)
    worker_log.skip_to_end()
    sent_before = {name: s.sent_messages for name, s in StateStore(client, hub).all().items()}
    versions_before = {k: str(v) for k, v in VersionStore(client, hub).all().items()}
    pgids = {kind: agent.pgid(kind) for kind in agent.processes}
    before = {kind: {s.pid: s for s in group_members(pgid)} for kind, pgid in pgids.items()}
    spies = {kind: PySpy(py_spy, pgid, agent.log_dir / f"idle-{kind}.pyspy.txt") for kind, pgid in pgids.items()}
    started = time.monotonic()
    time.sleep(seconds)
    after = {kind: {s.pid: s for s in group_members(pgid)} for kind, pgid in pgids.items()}
    elapsed = time.monotonic() - started
    profiles = {kind: spy.stop() for kind, spy in spies.items()}
    agent.check_running()
    sent_after = {name: s.sent_messages for name, s in StateStore(client, hub).all().items()}
    window_lines = worker_log.new_lines()

    processes: list[dict[str, Any]] = []
    per_kind: dict[str, float] = {}
    total_ticks = 0
    for kind, pgid in pgids.items():
        deltas = cpu_deltas(before[kind], after[kind])
        for pid, ticks in deltas.items():
            processes.append(
                {
                    "kind": kind if pid == pgid else f"{kind} pool",
                    "pid": pid,
                    "cpu_percent": percent(ticks, elapsed),
                    "cpu_seconds": round(ticks / CLK_TCK, 2),
                    "rss_mib": mib(status_kb(pid, "VmRSS")),
                    "hwm_mib": mib(status_kb(pid, "VmHWM")),
                    "pss_mib": mib(pss_kb(pid)),
                    "cmd": cmdline(pid)[:100],
                }
            )
        per_kind[kind] = percent(sum(deltas.values()), elapsed)
        total_ticks += sum(deltas.values())
    figures: dict[str, Any] = {}
    for kind, profile in profiles.items():
        if profile is not None:
            samples, frames = top_frames(profile, count=10)
            figures.setdefault("profiles", {})[kind] = {
                "file": str(profile),
                "samples": samples,
                "self_percent": frames,
                "project_inclusive_percent": project_functions(profile, count=8),
            }
    return {
        **figures,
        "window_seconds": round(elapsed, 2),
        "cpu_percent_total": percent(total_ticks, elapsed),
        "cpu_percent_by_kind": per_kind,
        "rss_mib_total": round(sum(p["rss_mib"] or 0.0 for p in processes), 1),
        "pss_mib_total": round(sum(p["pss_mib"] or 0.0 for p in processes), 1),
        "processes": processes,
        "sent_messages_in_window": {k: v - sent_before.get(k, 0) for k, v in sent_after.items()},
        "versions_before": versions_before,
        "versions_after": {k: str(v) for k, v in VersionStore(client, hub).all().items()},
        "worker_log_lines_in_window": len(window_lines),
        "kafka_trouble_lines": kafka_trouble(window_lines),
    }


def render(report: Report, figures: dict[str, Any]) -> None:
    report.say(
        f"idle agent, hub {figures['hub']}: {figures['clusters']} clusters, {figures['policies']} policies, no churn"
    )
    args = " ".join(figures["worker_args"]) or "(as docker-compose)"
    report.say(f"worker args: {args}; listener: {figures['listener']}; window {figures['window_seconds']:.1f}s")
    report.say(f"{'process':<14} {'pid':>7} {'CPU %':>7} {'CPU s':>7} {'RSS MiB':>8} {'HWM MiB':>8} {'PSS MiB':>8}")
    for p in figures["processes"]:
        report.say(
            f"{p['kind']:<14} {p['pid']:>7} {p['cpu_percent']:>7.2f} {p['cpu_seconds']:>7.2f} "
            f"{p['rss_mib'] or 0:>8.1f} {p['hwm_mib'] or 0:>8.1f} {p['pss_mib'] or 0:>8.1f}"
        )
    report.say("per kind: " + ", ".join(f"{k} {v:.2f} %" for k, v in figures["cpu_percent_by_kind"].items()))
    total = figures["cpu_percent_total"]
    verdict = "within" if total <= TARGET_PERCENT else "OVER"
    report.say(
        f"total: {total:.2f} % of one core ({verdict} the {TARGET_PERCENT:g} % target); "
        f"RSS {figures['rss_mib_total']:.0f} MiB, PSS {figures['pss_mib_total']:.0f} MiB"
    )
    report.say(
        f"messages sent in the window: {figures['sent_messages_in_window']}; "
        f"worker log lines: {figures['worker_log_lines_in_window']}"
    )
    for kind, profile in figures.get("profiles", {}).items():
        report.say(f"py-spy {kind}: {profile['samples']} samples ({profile['file']}); self time by line:")
        for frame, share in profile["self_percent"]:
            report.say(f"   {share:5.1f} %  {frame}")
        for frame, share in profile["project_inclusive_percent"]:
            report.say(f"   {share:5.1f} %  (inclusive) {frame}")
    if figures["kafka_trouble_lines"]:
        report.say(f"WARNING: Kafka was unreachable during the window ({figures['kafka_trouble_lines']} log lines)")


def monitor_redis(report: Report, url: str, db: int, seconds: float) -> None:
    commands = redis_commands(url, db, seconds)
    per_second = {name: round(count / seconds, 1) for name, count in commands.items()}
    top = ", ".join(f"{n} {v}" for n, v in list(per_second.items())[:12])
    rate = sum(commands.values()) / seconds
    report.say(f"Redis commands of the agent per second (MONITOR, {seconds:g}s): {rate:.1f}; {top}")
    report.figures["redis_commands_per_second"] = per_second


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    names = BenchNames.fresh("idle")
    url = redis_url_with_db(default_redis_url(), args.redis_db)
    kafka = default_kafka()
    client = redis.Redis.from_url(url)
    log_dir = log_dir_for(names, args.log_dir)
    agent = AgentProcesses(agent_env(names, url, kafka), log_dir)
    report = Report("agent_idle")
    worker_extra = (LEAN_FLAGS if args.lean_worker else []) + args.worker_arg
    try:
        progress(f"hub {names.hub}, Redis {url}, logs in {log_dir}")
        filled = populate(
            RedisInventory(client, names.hub),
            names.hub,
            clusters=args.clusters,
            policies=args.policies,
            clusters_per_policy=args.clusters_per_policy,
        )
        progress(f"populated {filled.clusters} clusters, {filled.policies} policies in {filled.seconds:.1f}s")
        agent.start(WORKER, worker_argv(worker_extra))
        agent.start(BEAT, beat_argv())
        if not args.no_listener:
            agent.start(LISTENER, listener_argv())
        startup = wait_until(
            lambda: startup_done(client, names.hub),
            timeout=args.startup_timeout,
            what="the startup resyncs",
            check=agent.check_running,
        )
        progress(f"startup resyncs done after {startup:.1f}s; settling {args.settle:.0f}s")
        time.sleep(args.settle)
        agent.check_running()
        progress(f"measuring {args.seconds:.0f}s")
        report.figures.update(
            {
                "hub": names.hub,
                "clusters": args.clusters,
                "policies": args.policies,
                "worker_args": worker_extra,
                "listener": not args.no_listener,
                "startup_seconds": round(startup, 2),
                "target_percent": TARGET_PERCENT,
                **measure(agent, client, names.hub, args.seconds, args.py_spy),
            }
        )
        render(report, report.figures)
        if args.redis_monitor > 0:
            monitor_redis(report, url, args.redis_db, args.redis_monitor)
    finally:
        codes = agent.stop_all()
        if codes:
            progress(f"stopped: {codes}")
        if not args.keep:
            deleted = cleanup_redis(client, names.hub)
            problems = delete_topics(kafka, [names.status_topic, names.spec_topic])
            progress(f"deleted {deleted} Redis keys; topics: {'; '.join(problems) or 'deleted'}")
        client.close()
    report.emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
