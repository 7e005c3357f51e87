"""An upstream-like feed for minutes: simulated upstream agents (``tests/upstream_agent.py``) emitting every status
type, through the real ``consume_status``; then the dead letters and the copy are checked.

    .venv/bin/python bench/upstream_feed.py [--hubs 4] [--minutes 10] [--interval 1]

In a scratch database (dropped at the end unless ``--keep``) and on topics of this run (deleted at the end): half
of the hubs send to a shared status topic (``GH_SHARED_STATUS_TOPIC``), the others to their own topics. Every
``--interval`` seconds each hub sends a heartbeat, cluster and policy changes (updates, deletes by id, id-less
deletes with a re-creation under a new uid), its compliance and complete compliance (``extdependencyversion``),
and events of every stream (batch and single mode). Reports the messages sent, the dead letters (target: 0),
whether each hub's copy and stored events are whole, and how long after the last send that was true.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.manager_probe import in_scratch_database  # noqa: E402


def run(args: argparse.Namespace) -> dict[str, Any]:
    import subprocess

    import django

    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, env=dict(os.environ), check=True
    )
    django.setup()

    from bench.common import delete_topics
    from globalhub.manager.models import DeadLetter
    from globalhub.protocol.kafka import STATUS_TOPIC_CONFIG, ConfirmedProducer, KafkaSettings, ensure_topics
    from tests.helpers import start_consumer, wait_for
    from tests.upstream_agent import UpstreamLikeHub, holds_everything

    tag = uuid.uuid4().hex[:6]
    prefix, shared = f"bench{tag}-gh-status.", f"bench{tag}-gh-status"
    hubs = [UpstreamLikeHub(f"bench{tag}-up{i}", seed=i) for i in range(args.hubs)]
    topics = [shared if i % 2 == 0 else prefix + hub.hub for i, hub in enumerate(hubs)]
    kafka = KafkaSettings.from_env()
    ensure_topics(kafka, sorted(set(topics)), STATUS_TOPIC_CONFIG)
    env = {
        **os.environ,
        "GH_STATUS_TOPIC_PREFIX": prefix,
        "GH_SHARED_STATUS_TOPIC": shared,
        "GH_CONSUMER_GROUP": f"bench{tag}",
        "GH_TOPIC_REFRESH_MS": "1000",
        "PYTHONUNBUFFERED": "1",
    }
    log_dir = Path(tempfile.mkdtemp(prefix=f"bench-upstream-{tag}-"))
    consumer = start_consumer(env, log_dir)
    producer = ConfirmedProducer(kafka)
    sent = 0
    try:
        for hub, topic in zip(hubs, topics, strict=True):
            sent += producer.send(topic, hub.start())
        deadline = time.monotonic() + args.minutes * 60
        while time.monotonic() < deadline:
            tick = time.monotonic()
            for hub, topic in zip(hubs, topics, strict=True):
                sent += producer.send(topic, hub.tick())
            time.sleep(max(0.0, args.interval - (time.monotonic() - tick)))
        last_send = time.monotonic()
        for hub in hubs:
            wait_for(partial(holds_everything, hub), timeout=300, what=f"{hub.hub}'s copy")
        settled = time.monotonic() - last_send
        letters = DeadLetter.objects.filter(topic__in=set(topics)).count()
        events = {t.short: sum(h.events.get(t, 0) for h in hubs) for t in hubs[0].events}
    finally:
        producer.close()
        consumer.stop()
        from django.db import connections

        connections.close_all()
        delete_topics(kafka.bootstrap_servers, sorted(set(topics)))
    return {
        "hubs": args.hubs,
        "minutes": args.minutes,
        "messages_sent": sent,
        "events_sent": events,
        "dead_letters": letters,
        "every_copy_whole": 1,
        "whole_seconds_after_the_last_send": round(settled, 2),
        "consumer_log": str(consumer.log_path),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hubs", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    print(json.dumps(in_scratch_database(run, args, keep=args.keep)))


if __name__ == "__main__":
    main()
