"""``python -m bench.fleet``: play many hubs against a running manager (see ``bench/fleet/__init__.py``).

    python -m bench.fleet --hubs 1000 --clusters 100 --policies 10 --compliance 50 --heartbeat 10s \\
        --delta-interval 1s --changes-per-second 500 --processes 2 --prefix gh-status. --spec-topic gh-spec

Kafka, the topic prefix, the spec topic, the send mode and the send timeout default to what the agent reads from
the environment (``KAFKA_BOOTSTRAP_SERVERS`` and the ``KAFKA_*`` security settings, ``GH_STATUS_TOPIC_PREFIX``,
``GH_SPEC_TOPIC``, ``GH_SEND_MODE``, ``GH_SEND_TIMEOUT``). Progress goes to stderr; the last line of stdout is one
JSON object with the fleet's figures (per process and summed).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import signal
import time
import uuid
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from agent_tasks.config import AgentConfig
from agent_tasks.emitter import SendMode
from bench.fleet.changes import DEFAULT_MIX, Shape
from bench.fleet.run import FleetConfig, create_topics, run_process
from globalhub.envconf import ConfigError, parse_duration

log = logging.getLogger("bench.fleet")
SUMMED = ("hubs", "waiting_types", "resyncs", "deltas", "heartbeats", "messages", "bytes", "failures", "changes")


def seconds(text: str) -> float:
    """A duration argument (``10s``, ``500ms``, ``2m`` or plain seconds)."""
    try:
        return parse_duration(text).total_seconds()
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def mix(text: str) -> dict[str, float]:
    """``managedcluster=0.5,policy.localspec=0.1,policy.localcompliance=0.4`` (weights, any scale)."""
    weights: dict[str, float] = {}
    for part in filter(None, text.split(",")):
        name, _, weight = part.partition("=")
        if name not in DEFAULT_MIX:
            raise argparse.ArgumentTypeError(f"{name!r}: the kinds are {', '.join(DEFAULT_MIX)}")
        weights[name] = float(weight)
    return weights


def parser() -> argparse.ArgumentParser:
    agent = AgentConfig.from_env()
    p = argparse.ArgumentParser(
        prog="python -m bench.fleet", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--hubs", type=int, default=100)
    p.add_argument("--hub-prefix", default="fleet-", help="hub names are <hub-prefix><00000…>")
    p.add_argument("--clusters", type=int, default=100, help="managed clusters per hub")
    p.add_argument("--policies", type=int, default=10, help="local policies per hub")
    p.add_argument("--compliance", type=int, default=50, help="compliance rows per hub (spread over the policies)")
    p.add_argument("--heartbeat", type=seconds, default=60.0, help="heartbeat interval (agent default 60s)")
    p.add_argument("--delta-interval", type=seconds, default=5.0, help="delta sync interval (agent default 5s)")
    p.add_argument("--changes-per-second", type=float, default=0.0, help="object changes per second, all hubs")
    p.add_argument("--mix", type=mix, default=dict(DEFAULT_MIX), help="weights of the change kinds")
    p.add_argument("--change-log", type=Path, help="CSV of every change (.<process> added with --processes > 1)")
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--senders", type=int, default=32, help="sending threads per process")
    p.add_argument("--prefix", default=agent.status_topic_prefix, help="status topic prefix")
    p.add_argument("--spec-topic", default=agent.spec_topic)
    p.add_argument("--send-mode", type=SendMode, default=agent.send_mode, choices=list(SendMode))
    p.add_argument("--no-digests", action="store_true", help="heartbeats without anti-entropy digests")
    p.add_argument("--no-startup-resync", action="store_true", help="hubs start with an empty resync queue")
    p.add_argument("--no-create-topics", action="store_true")
    p.add_argument("--topic-batch", type=int, default=200, help="topics per admin request")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration", type=seconds, help="stop after this long (default: at SIGTERM/SIGINT)")
    p.add_argument("--stats-interval", type=seconds, default=10.0)
    p.add_argument("--ready-file", type=Path, help="write <file>.<process> once each process listens for requests")
    p.add_argument("--log-level", default="WARNING", help="of the agent's modules (the fleet's own: INFO)")
    return p


def config_from(args: argparse.Namespace) -> FleetConfig:
    agent = AgentConfig.from_env()
    if args.hubs < 1 or args.processes < 1 or args.processes > args.hubs:
        raise SystemExit("--hubs and --processes must be at least 1, and --processes at most --hubs")
    return FleetConfig(
        kafka=agent.kafka,
        hubs=args.hubs,
        hub_prefix=args.hub_prefix,
        shape=Shape(args.clusters, args.policies, args.compliance),
        heartbeat=args.heartbeat,
        delta_interval=args.delta_interval,
        changes_per_second=args.changes_per_second,
        mix=args.mix,
        processes=args.processes,
        status_prefix=args.prefix,
        spec_topic=args.spec_topic,
        send_mode=args.send_mode,
        send_timeout=agent.send_timeout_ms / 1000,
        senders=args.senders,
        digests=not args.no_digests,
        startup_resync=not args.no_startup_resync,
        seed=args.seed,
        change_log=args.change_log,
        stats_interval=args.stats_interval,
        duration=args.duration,
        group_tag=f"globalhub_fleet_{uuid.uuid4().hex[:8]}",
        topic_batch=args.topic_batch,
        ready_file=args.ready_file,
    )


def run_fleet(config: FleetConfig) -> dict[str, Any]:
    """Run the fleet in this process, or in ``processes`` spawned ones (SIGTERM/SIGINT are passed on)."""
    if config.processes == 1:
        return summary([run_process(config, 0)])
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    children = [
        context.Process(target=run_process, args=(config, index, results), name=f"fleet-{index}")
        for index in range(config.processes)
    ]
    for child in children:
        child.start()

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            if child.pid is not None and child.is_alive():
                child.terminate()  # SIGTERM: the child stops its loops, flushes and reports

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    figures = [results.get() for _ in children]
    for child in children:
        child.join()
    return summary(figures)


def summary(per_process: list[dict[str, Any]]) -> dict[str, Any]:
    totals = {name: sum(figures[name] for figures in per_process) for name in SUMMED}
    return {
        "bench": "fleet",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **totals,
        "processes": sorted(per_process, key=lambda figures: figures["process"]),
    }


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log.setLevel(logging.INFO)
    config = config_from(args)
    if not args.no_create_topics:
        create_topics(config)
    print(json.dumps(run_fleet(replace(config))), flush=True)


if __name__ == "__main__":
    main()
