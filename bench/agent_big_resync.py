"""Big resync: wall time, peak RSS, messages and bytes of a full ``managedcluster`` resync of N clusters.

    .venv/bin/python bench/agent_big_resync.py                        # 100,000 clusters
    .venv/bin/python bench/agent_big_resync.py --clusters 20000
    .venv/bin/python bench/agent_big_resync.py --py-spy /tmp/pyspy-venv/bin/py-spy   # and where the time goes

Populates a fresh hub with the simulator (realistic ManagedClusters, ~3.4 KB of JSON each), starts the agent's
worker and beat (``--with-listener`` adds the spec listener) with ``GH_AGENT_INTERVALS=managedcluster=1h`` so no
delta interferes, waits for the startup resyncs (which already send every cluster once), resets the worker
processes' peak RSS (``/proc/<pid>/clear_refs``), then requests a full resync of ``managedcluster`` with
``python -m agent_tasks.ctl resync managedcluster`` and measures:

* wall time from the request to the worker's ``type=managedcluster resync sent`` log line (and its parts: queue
  wait, the worker's own send time);
* the worker processes' peak RSS during the resync (VmHWM after the reset, and sampled VmRSS), CPU seconds;
* objects, messages and bytes as the worker logged them, and as read back from the topic with ``TopicReader``:
  every frame of that resync, the largest payload (<= 800 KiB = 819,200 bytes), the object count of the complete
  frame. Target (DESIGN "Performance targets"): agent peak RSS <= 250 MB.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import re
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis
from confluent_kafka import Consumer, TopicPartition

from agent_tasks.inventory import RedisInventory
from agent_tasks.simulate import populate
from bench.common import (
    BEAT,
    CLK_TCK,
    LISTENER,
    MAX_PAYLOAD,
    WORKER,
    AgentProcesses,
    BenchNames,
    LogFollower,
    PySpy,
    Report,
    RssSampler,
    agent_env,
    beat_argv,
    cleanup_redis,
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
    redis_url_with_db,
    reset_peak_rss,
    startup_done,
    status_kb,
    stop_on_sigterm,
    top_frames,
    wait_until,
    worker_argv,
)
from globalhub.protocol.events import EXT_FRAME, EXT_FRAME_SEQ, EXT_FRAME_TOTAL, EXT_OBJECT_COUNT, EXT_RESYNC_ID
from globalhub.protocol.kafka import KafkaSettings
from tests.helpers import REPO, python_argv
from tests.kafka_reader import TopicReader

TYPE = "managedcluster"
TARGET_RSS_MB = 250  # DESIGN: agent peak RSS <= 250 MB during the big resync
SENT = re.compile(rf"type={TYPE} resync sent: (\d+) objects in (\d+) messages, (\d+) bytes, version (\S+), (\d+) ms")
STARTS = re.compile(rf"resync of {TYPE} starts after ([\d.]+)s in the queue")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clusters", type=int, default=100_000)
    p.add_argument("--policies", type=int, default=20)
    p.add_argument("--clusters-per-policy", type=int, default=None)
    p.add_argument("--redis-db", type=int, default=13, help="Redis database for this run (default 13)")
    p.add_argument("--with-listener", action="store_true", help="also run the spec listener")
    p.add_argument("--worker-arg", action="append", default=[], help="extra argument for the celery worker")
    p.add_argument("--startup-timeout", type=float, default=1800.0)
    p.add_argument("--resync-timeout", type=float, default=1800.0)
    p.add_argument("--no-topic-check", action="store_true", help="do not read the resync back from Kafka")
    p.add_argument("--py-spy", default=None, help="path to py-spy: profile the worker during the resync")
    p.add_argument("--log-dir", default=None, help="where the processes' logs go (default /tmp/<tag>)")
    p.add_argument("--keep", action="store_true", help="keep the Redis keys and topics")
    return p.parse_args(argv)


@dataclass
class LoggedResync:
    objects: int
    messages: int
    bytes: int
    version: str
    worker_ms: int
    queue_wait: float | None


def logged_resync(lines: list[str], queue_wait: float | None) -> tuple[LoggedResync | None, float | None]:
    """The worker's "resync sent" line among ``lines`` (and the queue wait it logged before it)."""
    for line in lines:
        starts = STARTS.search(line)
        if starts:
            queue_wait = float(starts.group(1))
        sent = SENT.search(line)
        if sent:
            objects, messages, size, version, ms = sent.groups()
            return LoggedResync(int(objects), int(messages), int(size), version, int(ms), queue_wait), queue_wait
    return None, queue_wait


def high_watermark(kafka: str, topic: str) -> int:
    consumer = Consumer({**KafkaSettings(bootstrap_servers=kafka).client_config(), "group.id": "bench-watermark"})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return int(high)
    finally:
        consumer.close()


@dataclass
class TopicFigures:
    messages: int = 0
    bytes: int = 0
    largest: int = 0
    resync_ids: set[str] = field(default_factory=set)
    frames: Counter[str] = field(default_factory=Counter)
    object_messages: int = 0
    metadata_messages: int = 0
    metadata_bytes: int = 0
    seqs: list[int] = field(default_factory=list)
    total: int | None = None
    object_count: int | None = None
    complete: bool = False
    other_messages: int = 0
    read_seconds: float = 0.0


def read_resync(kafka: str, topic: str, from_offset: int, timeout: float) -> TopicFigures:
    """Every message of the measured resync, read back with the tests' ``TopicReader`` (from the topic's start)."""
    figures = TopicFigures()
    reader = TopicReader(KafkaSettings(bootstrap_servers=kafka), topic)
    started = time.monotonic()
    try:
        while not figures.complete and time.monotonic() - started < timeout:
            for sent in reader.read(timeout=5.0, quiet=1.0):
                if sent.offset < from_offset:
                    continue
                ext = sent.event.extensions
                if sent.short_type != TYPE or EXT_RESYNC_ID not in ext:
                    figures.other_messages += 1
                    continue
                figures.messages += 1
                figures.bytes += sent.size
                figures.largest = max(figures.largest, sent.size)
                figures.resync_ids.add(ext[EXT_RESYNC_ID])
                figures.frames[ext.get(EXT_FRAME, "?")] += 1
                figures.seqs.append(int(ext.get(EXT_FRAME_SEQ, "-1")))
                if sent.event.data.startswith(b'{"resync_metadata"'):
                    figures.metadata_messages += 1
                    figures.metadata_bytes += sent.size
                else:
                    figures.object_messages += 1
                if ext.get(EXT_FRAME) == "complete":
                    figures.total = int(ext[EXT_FRAME_TOTAL])
                    figures.object_count = int(ext[EXT_OBJECT_COUNT])
                    figures.complete = True
    finally:
        reader.close()
    figures.read_seconds = time.monotonic() - started
    return figures


def worker_snapshot(pgid: int) -> dict[int, tuple[int, int | None]]:
    """CPU ticks and VmHWM (kB) of each worker process."""
    return {s.pid: (s.total_ticks, status_kb(s.pid, "VmHWM")) for s in group_members(pgid)}


def run_resync(args: argparse.Namespace, agent: AgentProcesses, names: BenchNames, kafka: str) -> dict[str, Any]:
    """Request the resync, wait for the worker's log line; the figures of the worker side."""
    pgid = agent.pgid(WORKER)
    startup_hwm = {pid: hwm for pid, (_, hwm) in worker_snapshot(pgid).items()}
    resets = {pid: reset_peak_rss(pid) for pid in startup_hwm}
    before = worker_snapshot(pgid)
    offset = high_watermark(kafka, names.status_topic)
    log = LogFollower(agent.processes[WORKER].log_path)
    log.skip_to_end()
    spy = PySpy(args.py_spy, pgid, agent.log_dir / "resync.pyspy.txt")
    logged: LoggedResync | None = None
    queue_wait: float | None = None
    lines: list[str] = []
    with RssSampler([agent.pgid(kind) for kind in agent.processes]) as sampler:
        requested = time.monotonic()
        ctl = subprocess.run(
            python_argv("-m", "agent_tasks.ctl", "resync", TYPE),
            cwd=REPO,
            env=agent.env,
            capture_output=True,
            text=True,
            check=True,
        )
        ctl_seconds = time.monotonic() - requested
        while logged is None:
            if time.monotonic() - requested > args.resync_timeout:
                raise TimeoutError(f"no '{TYPE} resync sent' line within {args.resync_timeout:.0f}s")
            agent.check_running()
            fresh = log.new_lines()
            lines += fresh
            logged, queue_wait = logged_resync(fresh, queue_wait)
            if logged is None:
                time.sleep(0.05)
        wall = time.monotonic() - requested
    profile = spy.stop()
    after = worker_snapshot(pgid)
    ticks = {pid: after[pid][0] - before.get(pid, (0, None))[0] for pid in after}
    busiest = max(ticks, key=lambda pid: ticks[pid])
    hwm_kb = {pid: hwm for pid, (_, hwm) in after.items()}
    # VmHWM counts from the reset on; where the reset failed it still holds the startup resync's peak: sampled only.
    hwm_values = [kb for kb in hwm_kb.values() if kb is not None] if all(resets.values()) else []
    peak_kb = max(hwm_values + [sampler.peak_kb.get(pid, 0) for pid in hwm_kb], default=None)
    return {
        "offset": offset,
        "ctl_output": ctl.stdout.strip(),
        "ctl_seconds": round(ctl_seconds, 3),
        "wall_seconds": round(wall, 3),
        "logged": logged,
        "resync_pid": busiest,
        "cpu_seconds_by_pid": {pid: round(t / CLK_TCK, 2) for pid, t in ticks.items()},
        "hwm_mib_by_pid": {pid: mib(kb) for pid, kb in hwm_kb.items()},
        "startup_hwm_mib_by_pid": {pid: mib(kb) for pid, kb in startup_hwm.items()},
        "sampled_peak_rss_mib_by_pid": {pid: mib(kb) for pid, kb in sampler.peak_kb.items() if pid in hwm_kb},
        "agent_peak_total_rss_mib": mib(sampler.peak_total_rss_kb),
        "agent_peak_total_pss_mib": mib(sampler.peak_total_pss_kb),
        "agent_processes": len(sampler.peak_kb),
        "rss_samples": sampler.samples,
        "hwm_reset": all(resets.values()),
        "peak_rss_mib": mib(peak_kb),
        "profile": profile,
        "kafka_trouble_lines": kafka_trouble(lines),
    }


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one run, told in order
    args = parse_args(argv)
    stop_on_sigterm()
    names = BenchNames.fresh("big")
    url = redis_url_with_db(default_redis_url(), args.redis_db)
    kafka = default_kafka()
    client = redis.Redis.from_url(url)
    log_dir = log_dir_for(names, args.log_dir)
    agent = AgentProcesses(agent_env(names, url, kafka, {"GH_AGENT_INTERVALS": f"{TYPE}=1h"}), log_dir)
    report = Report("agent_big_resync")
    try:
        progress(f"hub {names.hub}, Redis {url}, logs in {log_dir}; populating {args.clusters} clusters")
        populate_started = time.monotonic()
        filled = populate(
            RedisInventory(client, names.hub),
            names.hub,
            clusters=args.clusters,
            policies=args.policies,
            clusters_per_policy=args.clusters_per_policy,
        )
        populate_wall = time.monotonic() - populate_started
        inventory_bytes = int(client.memory_usage(f"gh:{names.hub}:inv:{TYPE}", samples=0) or 0)
        progress(f"populated in {filled.seconds:.1f}s; starting the agent")

        agent.start(WORKER, worker_argv(args.worker_arg))
        agent.start(BEAT, beat_argv())
        if args.with_listener:
            agent.start(LISTENER, listener_argv())
        startup_log = LogFollower(agent.processes[WORKER].log_path)
        startup = wait_until(
            lambda: startup_done(client, names.hub),
            timeout=args.startup_timeout,
            what="the startup resyncs",
            check=agent.check_running,
            interval=0.5,
        )
        startup_lines = startup_log.new_lines()
        startup_resync, _ = logged_resync(startup_lines, None)
        startup_trouble = kafka_trouble(startup_lines)
        progress(f"startup resyncs done after {startup:.1f}s; requesting a full resync of {TYPE}")
        time.sleep(2.0)  # let the last tick's bookkeeping finish

        worker = run_resync(args, agent, names, kafka)
        logged: LoggedResync = worker.pop("logged")
        profile: Path | None = worker.pop("profile")
        offset = worker.pop("offset")
        progress(f"resync sent after {worker['wall_seconds']:.1f}s; reading it back from {names.status_topic}")
        topic = None if args.no_topic_check else read_resync(kafka, names.status_topic, offset, timeout=600)

        cpu = worker["cpu_seconds_by_pid"][worker["resync_pid"]]
        objects_per_s = round(logged.objects / (logged.worker_ms / 1000), 1) if logged.worker_ms else None
        report.figures.update(
            {
                "hub": names.hub,
                "clusters": args.clusters,
                "policies": args.policies,
                "populate_seconds": round(filled.seconds, 2),
                "populate_wall_seconds": round(populate_wall, 2),
                "inventory_mib_in_redis": mib(inventory_bytes // 1024),
                "startup_seconds": round(startup, 2),
                "startup_resync": None if startup_resync is None else startup_resync.__dict__,
                "startup_kafka_trouble_lines": startup_trouble,
                **worker,
                "queue_wait_seconds": logged.queue_wait,
                "worker_send_seconds": logged.worker_ms / 1000,
                "logged_objects": logged.objects,
                "logged_messages": logged.messages,
                "logged_bytes": logged.bytes,
                "version_sent": logged.version,
                "objects_per_second": objects_per_s,
                "objects_per_second_wall": round(logged.objects / worker["wall_seconds"], 1),
                "objects_per_cpu_second": round(logged.objects / cpu, 1) if cpu else None,
                "bytes_per_object": round(logged.bytes / logged.objects, 1) if logged.objects else None,
                "target_rss_mb": TARGET_RSS_MB,
            }
        )
        if topic is not None:
            contiguous = sorted(topic.seqs) == list(range(len(topic.seqs)))
            report.figures.update(
                {
                    "topic_messages": topic.messages,
                    "topic_bytes": topic.bytes,
                    "topic_largest_payload": topic.largest,
                    "topic_largest_ok": topic.largest <= MAX_PAYLOAD,
                    "topic_frames": dict(topic.frames),
                    "topic_object_messages": topic.object_messages,
                    "topic_metadata_messages": topic.metadata_messages,
                    "topic_metadata_bytes": topic.metadata_bytes,
                    "topic_resync_ids": len(topic.resync_ids),
                    "topic_frame_total": topic.total,
                    "topic_object_count": topic.object_count,
                    "topic_seqs_contiguous": contiguous,
                    "topic_complete": topic.complete,
                    "topic_other_messages": topic.other_messages,
                    "topic_read_seconds": round(topic.read_seconds, 1),
                }
            )
        if profile is not None:
            report.figures["profile_file"] = str(profile)
            samples, frames = top_frames(profile)
            report.figures["profile_samples"] = samples
            report.figures["profile_self_percent"] = frames
            report.figures["profile_project_inclusive_percent"] = project_functions(profile)
        render(report, report.figures)
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


def render(report: Report, f: dict[str, Any]) -> None:
    report.say(f"big resync of {TYPE}, hub {f['hub']}: {f['clusters']} clusters, {f['policies']} policies")
    report.say(
        f"populate: {f['populate_seconds']:.1f}s ({f['clusters'] / max(f['populate_seconds'], 1e-9):.0f} clusters/s);"
        f" {TYPE} hash in Redis {f['inventory_mib_in_redis']} MiB"
    )
    if f["startup_resync"]:
        s = f["startup_resync"]
        report.say(
            f"startup: all four types sent {f['startup_seconds']:.1f}s after the worker started "
            f"({TYPE}: {s['objects']} objects in {s['worker_ms'] / 1000:.1f}s)"
        )
    report.say(
        f"request -> 'resync sent': {f['wall_seconds']:.2f}s (ctl {f['ctl_seconds']:.2f}s, queue wait "
        f"{f['queue_wait_seconds']}s, worker send {f['worker_send_seconds']:.2f}s); "
        f"{f['objects_per_second']} objects/s in the worker, {f['objects_per_second_wall']} objects/s wall"
    )
    cpu = f["cpu_seconds_by_pid"][f["resync_pid"]]
    report.say(
        f"CPU time of the process that sent it: {cpu:.1f}s ({f['objects_per_cpu_second']} objects per CPU second; "
        f"{100 * cpu / max(f['worker_send_seconds'], 1e-9):.0f} % of the send time on a CPU)"
    )
    report.say(
        f"worker log: {f['logged_objects']} objects in {f['logged_messages']} messages, {f['logged_bytes']} bytes "
        f"({f['bytes_per_object']} bytes/object), version {f['version_sent']}"
    )
    pid = f["resync_pid"]
    verdict = "within" if (f["peak_rss_mib"] or 0) * 1.048576 <= TARGET_RSS_MB else "OVER"
    report.say(
        f"peak RSS of the worker process that sent it (pid {pid}): {f['hwm_mib_by_pid'].get(pid)} MiB VmHWM since "
        f"the request (reset: {f['hwm_reset']}), sampled {f['sampled_peak_rss_mib_by_pid'].get(pid)} MiB; "
        f"max over the worker's processes {f['peak_rss_mib']} MiB ({verdict} the {TARGET_RSS_MB} MB target)"
    )
    report.say(f"   startup VmHWM by pid: {f['startup_hwm_mib_by_pid']}; CPU s by pid: {f['cpu_seconds_by_pid']}")
    report.say(
        f"all {f['agent_processes']} agent processes together, peak during the resync: RSS "
        f"{f['agent_peak_total_rss_mib']} MiB, PSS {f['agent_peak_total_pss_mib']} MiB (shared pages counted once)"
    )
    if "topic_messages" in f:
        report.say(
            f"topic: {f['topic_messages']} messages ({f['topic_object_messages']} with objects, "
            f"{f['topic_metadata_messages']} resync_metadata = {f['topic_metadata_bytes']} bytes), "
            f"{f['topic_bytes']} bytes, largest payload {f['topic_largest_payload']} bytes "
            f"({'<=' if f['topic_largest_ok'] else 'OVER'} {MAX_PAYLOAD}); frames {f['topic_frames']}; "
            f"complete frame: total {f['topic_frame_total']}, objects {f['topic_object_count']}; "
            f"seqs contiguous {f['topic_seqs_contiguous']}; resync ids {f['topic_resync_ids']}"
        )
    if f["kafka_trouble_lines"] or f["startup_kafka_trouble_lines"]:
        report.say(
            f"WARNING: Kafka was unreachable at times (worker log lines: {f['startup_kafka_trouble_lines']} during "
            f"startup, {f['kafka_trouble_lines']} during the measured resync): figures disturbed, run again"
        )
    if "profile_file" in f:
        report.say(f"py-spy ({f['profile_samples']} samples, {f['profile_file']}), self time by line:")
        for frame, share in f["profile_self_percent"]:
            report.say(f"   {share:5.1f} %  {frame}")
        report.say("   inclusive time of the project's functions:")
        for frame, share in f["profile_project_inclusive_percent"]:
            report.say(f"   {share:5.1f} %  {frame}")


if __name__ == "__main__":
    sys.exit(main())
