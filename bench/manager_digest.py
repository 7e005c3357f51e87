"""The manager's side of an anti-entropy digest: one hub's rows of one type as (count, XOR of row hashes), in SQL.

    .venv/bin/python bench/manager_digest.py [--hubs 5] [--rows 10000] [--runs 20]

Target (issue 11): ≤ 20 ms for a 10,000-row hub and type. Creates a scratch database (dropped at the end), migrates
it, writes ``--hubs`` hubs of ``--rows`` clusters each (the simulator's cluster objects, about 3 KB of JSON each) and
``--rows`` compliance rows each, then times ``globalhub.manager.digests.hub_digest`` for one hub: the first call
after ANALYZE and the median and max of ``--runs`` more, for clusters and for compliance.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.manager_probe import in_scratch_database  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hubs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    print(json.dumps(in_scratch_database(run, args)))


def timed(call: Any, runs: int) -> tuple[float, float, float]:
    started = time.perf_counter()
    call()
    first = (time.perf_counter() - started) * 1000
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return first, statistics.median(samples), max(samples)


def run(args: argparse.Namespace) -> dict[str, float | int]:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from agent_tasks.simulate import cluster_changes
    from globalhub.manager.digests import hub_digest
    from globalhub.manager.models import Hub, LocalCompliance, ManagedCluster
    from globalhub.protocol.bundles import dumps
    from globalhub.protocol.digest import payload_digest
    from globalhub.protocol.events import EventType

    call_command("migrate", verbosity=0)
    now = timezone.now()
    rng = random.Random(1)
    hubs = [f"hub-{i:03d}" for i in range(args.hubs)]
    Hub.objects.bulk_create([Hub(name=hub, last_heartbeat=now) for hub in hubs])
    for hub in hubs:
        clusters = []
        for change in cluster_changes(hub, args.rows, seed=hash(hub) & 0xFFFF):
            assert change.obj is not None
            clusters.append(
                ManagedCluster(
                    hub_id=hub,
                    cluster_id=uuid.UUID(change.object_id),
                    cluster_name=change.obj["metadata"]["name"],
                    payload=change.obj,
                    payload_digest=payload_digest(dumps(change.obj)),
                    created_at=now,
                    updated_at=now,
                )
            )
        ManagedCluster.objects.bulk_create(clusters, batch_size=2000)
        policy_ids = [uuid.uuid4() for _ in range(max(1, args.rows // 50))]
        LocalCompliance.objects.bulk_create(
            [
                LocalCompliance(
                    hub_id=hub,
                    policy_id=policy_ids[i % len(policy_ids)],
                    cluster_name=f"cluster-{i // len(policy_ids)}",
                    compliance=rng.choice(["compliant", "non_compliant", "pending", "unknown"]),
                    updated_at=now,
                )
                for i in range(args.rows)
            ],
            batch_size=5000,
        )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    hub = hubs[len(hubs) // 2]
    assert hub_digest(hub, EventType.MANAGED_CLUSTER).count == args.rows
    clusters_first, clusters_median, clusters_max = timed(lambda: hub_digest(hub, EventType.MANAGED_CLUSTER), args.runs)
    compliance_first, compliance_median, compliance_max = timed(
        lambda: hub_digest(hub, EventType.LOCAL_COMPLIANCE), args.runs
    )
    print(
        f"{args.hubs} hubs x {args.rows} clusters and {args.rows} compliance rows; one hub's digest: "
        f"clusters first {clusters_first:.1f} ms, median {clusters_median:.1f} ms (max {clusters_max:.1f}); "
        f"compliance first {compliance_first:.1f} ms, median {compliance_median:.1f} ms (max {compliance_max:.1f})"
    )
    return {
        "hubs": args.hubs,
        "rows": args.rows,
        "clusters_first_ms": round(clusters_first, 2),
        "clusters_median_ms": round(clusters_median, 2),
        "clusters_max_ms": round(clusters_max, 2),
        "compliance_first_ms": round(compliance_first, 2),
        "compliance_median_ms": round(compliance_median, 2),
        "compliance_max_ms": round(compliance_max, 2),
    }


if __name__ == "__main__":
    main()
