"""The Kubernetes resources the agent reads, and the paths to list and watch them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def name(self) -> str:
        """``plural.group``, as RBAC and CRDs name it."""
        return f"{self.plural}.{self.group}"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


MANAGED_CLUSTERS: Final = Resource(
    "cluster.open-cluster-management.io", "v1", "managedclusters", "ManagedCluster", namespaced=False
)
POLICIES: Final = Resource("policy.open-cluster-management.io", "v1", "policies", "Policy", namespaced=True)
CLUSTER_CLAIMS: Final = Resource(
    "cluster.open-cluster-management.io", "v1alpha1", "clusterclaims", "ClusterClaim", namespaced=False
)
RESOURCES: Final = (MANAGED_CLUSTERS, POLICIES, CLUSTER_CLAIMS)
