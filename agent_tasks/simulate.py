"""Hub simulator: writes a realistic inventory into the hub's Redis.

    python -m agent_tasks.simulate --clusters 1000            # this hub (HUB_NAME) gets 1,000 clusters
    python -m agent_tasks.simulate --clusters 1000 --reset    # replace the inventory instead of adding to it

Objects have upstream's shape: ManagedClusters with an ``id.k8s.io`` claim (the id the manager keys them by).
"""

from __future__ import annotations

import argparse
import base64
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from agent_tasks.config import AgentConfig
from agent_tasks.inventory import Change, RedisInventory
from globalhub.protocol.events import EventType
from globalhub.protocol.objects import CLUSTER_ID_CLAIM

CLUSTER = EventType.MANAGED_CLUSTER.short
_CLOUDS = [
    ("Amazon", "AWS", ["us-east-1", "us-west-2", "eu-west-1"]),
    ("Azure", "Azure", ["eastus", "westeurope"]),
    ("Google", "GCP", ["us-central1", "europe-west4"]),
    ("BareMetal", "BareMetal", ["dc1", "dc2"]),
]
_VERSIONS = ["4.14.12", "4.15.3", "4.16.8", "4.17.2"]


def make_cluster(hub: str, index: int, rng: random.Random) -> dict[str, Any]:
    """One ManagedCluster as a hub's API server would return it."""
    name = f"{hub}-cluster-{index:05d}"
    cluster_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    cloud, platform, regions = rng.choice(_CLOUDS)
    region = rng.choice(regions)
    ocp = rng.choice(_VERSIONS)
    created = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(500_000))
    stamp = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    ca_bundle = base64.b64encode(rng.randbytes(900)).decode()
    return {
        "apiVersion": "cluster.open-cluster-management.io/v1",
        "kind": "ManagedCluster",
        "metadata": {
            "name": name,
            "uid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "resourceVersion": str(rng.randrange(10_000, 9_999_999)),
            "generation": 1,
            "creationTimestamp": stamp,
            "labels": {
                "cloud": cloud,
                "vendor": "OpenShift",
                "name": name,
                "openshiftVersion": ocp,
                "openshiftVersion-major": ocp.rsplit(".", 2)[0],
                "region": region,
                "environment": rng.choice(["prod", "staging", "dev"]),
                "cluster.open-cluster-management.io/clusterset": "default",
                "feature.open-cluster-management.io/addon-work-manager": "available",
            },
            "annotations": {"open-cluster-management/created-via": "other"},
            "managedFields": [{"manager": "registration", "operation": "Update", "time": stamp}],
        },
        "spec": {
            "hubAcceptsClient": True,
            "leaseDurationSeconds": 60,
            "managedClusterClientConfigs": [{"url": f"https://api.{name}.example.com:6443", "caBundle": ca_bundle}],
        },
        "status": {
            "allocatable": {"cpu": str(rng.choice([16, 24, 48])), "memory": f"{rng.choice([64, 96, 192])}Gi"},
            "capacity": {"cpu": str(rng.choice([16, 24, 48])), "memory": f"{rng.choice([64, 96, 192])}Gi"},
            "clusterClaims": [
                {"name": CLUSTER_ID_CLAIM, "value": cluster_id},
                {"name": "platform.open-cluster-management.io", "value": platform},
                {"name": "region.open-cluster-management.io", "value": region},
                {"name": "version.openshift.io", "value": ocp},
            ],
            "conditions": [
                {"type": t, "status": "True", "reason": r, "lastTransitionTime": stamp, "message": m}
                for t, r, m in (
                    ("HubAcceptedManagedCluster", "HubClusterAdminAccepted", "Accepted by hub cluster admin"),
                    ("ManagedClusterJoined", "ManagedClusterJoined", "Managed cluster joined"),
                    ("ManagedClusterConditionAvailable", "ManagedClusterAvailable", "Managed cluster is available"),
                )
            ],
            "version": {"kubernetes": "v1.29.7"},
        },
    }


def cluster_changes(hub: str, count: int, seed: int, start: int = 0) -> list[Change]:
    rng = random.Random(f"{seed}:{hub}:{start}")
    changes = []
    for index in range(start, start + count):
        cluster = make_cluster(hub, index, rng)
        claim = next(c["value"] for c in cluster["status"]["clusterClaims"] if c["name"] == CLUSTER_ID_CLAIM)
        changes.append(Change(claim, cluster))
    return changes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", type=int, default=100, help="how many ManagedClusters to write")
    parser.add_argument("--seed", type=int, default=1, help="random seed (same seed, same objects)")
    parser.add_argument("--reset", action="store_true", help="remove this hub's inventory first")
    args = parser.parse_args(argv)
    config = AgentConfig.from_env()
    inventory = RedisInventory(redis.Redis.from_url(config.redis_url), config.hub_name)
    if args.reset:
        inventory.clear(CLUSTER)
    written = inventory.apply(CLUSTER, cluster_changes(config.hub_name, args.clusters, args.seed))
    print(f"hub {config.hub_name}: wrote {written} clusters, inventory holds {inventory.count(CLUSTER)}")


if __name__ == "__main__":
    main()
