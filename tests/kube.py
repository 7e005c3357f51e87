"""The local Kubernetes API server (``bin/stack`` service ``kube``) as tests use it.

Tests run one at a time against one API server, so each kube test starts from a clean slate (:meth:`KubeStack.wipe`)
and from the agent's RBAC as ``deploy/agent/base/rbac.yaml`` ships it. Helpers reach behind the API server too: stop
and start it, change etcd directly, compact etcd's history.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent_tasks.kube.api import Connector, Credentials, KubeApi
from agent_tasks.kube.resources import CLUSTER_CLAIMS, MANAGED_CLUSTERS, POLICIES, RESOURCES, Resource
from agent_tasks.simulate import make_cluster, make_policy
from globalhub.protocol.objects import CLUSTER_ID_CLAIM
from tests.helpers import REPO

AGENT_USER = "system:serviceaccount:globalhub-agent:globalhub-agent"
RBAC = REPO / "deploy" / "agent" / "base" / "rbac.yaml"
ETCD_PREFIX = "/registry/apiextensions.kubernetes.io"


def deployed_agent_rules() -> list[dict[str, Any]]:
    """The rules of the agent's ClusterRole, as the deployment ships them."""
    for document in yaml.safe_load_all(RBAC.read_text()):
        if document and document.get("kind") == "ClusterRole":
            return list(document["rules"])
    raise AssertionError(f"no ClusterRole in {RBAC}")


@dataclass
class KubeStack:
    dir: Path
    admin_kubeconfig: Path
    agent_kubeconfig: Path
    etcd_url: str = field(default_factory=lambda: f"http://127.0.0.1:{os.environ.get('GH_ETCD_PORT', '52379')}")

    @classmethod
    def from_env(cls) -> KubeStack:
        admin = Path(os.environ.get("GH_KUBE_ADMIN_KUBECONFIG") or REPO / ".stack" / "kube" / "admin.kubeconfig")
        agent = Path(os.environ.get("GH_KUBE_AGENT_KUBECONFIG") or admin.parent / "agent.kubeconfig")
        return cls(admin.parent, admin, agent)

    # --- clients -----------------------------------------------------------------------------------------------

    def admin(self) -> KubeApi:
        """A connection with every right (a client certificate in system:masters); the caller closes it."""
        return Connector(Credentials(kubeconfig=str(self.admin_kubeconfig))).open()

    @property
    def server(self) -> str:
        config = yaml.safe_load(self.admin_kubeconfig.read_text())
        return str(config["clusters"][0]["cluster"]["server"])

    @property
    def ca_file(self) -> Path:
        return self.dir / "pki" / "ca.crt"

    def agent_token(self) -> str:
        return (self.dir / "tokens.csv").read_text().splitlines()[0].split(",")[0]

    def kubeconfig(self, path: Path, *, server: str | None = None, token: str | None = None) -> Path:
        """A kubeconfig for the agent's user (or the given token) at ``path``, to an API server or a proxy of it."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": server or self.server, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": "local", "user": {"token": self.agent_token() if token is None else token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "local"}}],
            "current-context": "local",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # --- the slate -----------------------------------------------------------------------------------------------

    def ensure_up(self) -> None:
        stack("up", "kube")

    def wipe(self) -> None:
        """Delete every ManagedCluster, Policy and ClusterClaim."""
        api = self.admin()
        try:
            for resource in RESOURCES:
                for obj in api.list_all(resource):
                    api.delete(resource, obj["metadata"]["name"], obj["metadata"].get("namespace"))
        finally:
            api.close()

    def grant_agent(self, rules: list[dict[str, Any]]) -> None:
        """What the agent's user may do from now on (the API server asks within a second)."""
        (self.dir / "rules.json").write_text(json.dumps({"users": {AGENT_USER: rules}}))

    # --- behind the API server -------------------------------------------------------------------------------------

    def stop_apiserver(self) -> None:
        stack("down", "kube")

    def start_apiserver(self) -> None:
        stack("up", "kube")

    def etcdctl(self, *args: str) -> str:
        result = subprocess.run(
            ["etcdctl", "--endpoints", self.etcd_url, *args],
            env={**os.environ, "ETCDCTL_API": "3"},
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return result.stdout

    def etcd_delete(self, resource: Resource, name: str, namespace: str | None = None) -> None:
        """Delete an object straight in etcd, as if the API server never saw it go."""
        parts = [ETCD_PREFIX, resource.group, resource.plural, *([namespace] if namespace else []), name]
        deleted = self.etcdctl("del", "/".join(parts)).strip()
        assert deleted == "1", f"etcd had no {'/'.join(parts)}"

    def compact(self) -> int:
        """Compact etcd's history up to now: older resourceVersions are gone for good. Returns the revision."""
        status = json.loads(self.etcdctl("endpoint", "status", "-w", "json"))
        revision = int(status[0]["Status"]["header"]["revision"])
        self.etcdctl("compact", str(revision))
        return revision


def stack(*args: str) -> None:
    subprocess.run([str(REPO / "bin" / "stack"), *args], check=True, capture_output=True, timeout=300)


# --- objects ------------------------------------------------------------------------------------------------------


def list_all(api: KubeApi, resource: Resource) -> list[dict[str, Any]]:
    return api.list_all(resource)


def delete(api: KubeApi, resource: Resource, name: str, namespace: str | None = None) -> None:
    api.delete(resource, name, namespace)


def _creatable(obj: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    body = {k: v for k, v in obj.items() if k != "status"}
    metadata = {k: v for k, v in obj["metadata"].items() if k not in ("uid", "resourceVersion", "creationTimestamp")}
    body["metadata"] = metadata
    return body, obj.get("status") or {}


def create_cluster(api: KubeApi, hub: str, index: int, seed: int = 1) -> dict[str, Any]:
    """A realistic ManagedCluster (the simulator's), with its status; returns the stored object."""
    body, status = _creatable(make_cluster(hub, index, random.Random(f"{seed}:{index}")))
    api.create(MANAGED_CLUSTERS, body)
    return api.patch(MANAGED_CLUSTERS, body["metadata"]["name"], {"status": status}, status=True)


def claim_of(cluster: dict[str, Any]) -> str:
    return str(next(c["value"] for c in cluster["status"]["clusterClaims"] if c["name"] == CLUSTER_ID_CLAIM))


def create_policy(
    api: KubeApi, index: int, compliance: dict[str, str], namespace: str | None = None, seed: int = 1
) -> dict[str, Any]:
    """A root Policy with per-cluster compliance in its status (cluster name -> Compliant/NonCompliant/Pending/"")."""
    policy = make_policy(index, random.Random(f"{seed}:policy:{index}"))
    if namespace:
        policy["metadata"]["namespace"] = namespace
    body, _ = _creatable(policy)
    api.create(POLICIES, body, body["metadata"]["namespace"])
    return set_compliance(api, body["metadata"]["namespace"], body["metadata"]["name"], compliance)


def set_compliance(api: KubeApi, namespace: str, name: str, compliance: dict[str, str]) -> dict[str, Any]:
    entries = [
        {"clustername": cluster, "clusternamespace": cluster, **({"compliant": state} if state else {})}
        for cluster, state in compliance.items()
    ]
    return api.patch(POLICIES, name, {"status": {"status": entries}}, namespace, status=True)


def set_label(api: KubeApi, name: str, key: str, value: str) -> dict[str, Any]:
    return api.patch(MANAGED_CLUSTERS, name, {"metadata": {"labels": {key: value}}})


def create_claim(api: KubeApi, name: str, value: str) -> None:
    r = CLUSTER_CLAIMS
    api.create(r, {"apiVersion": r.api_version, "kind": r.kind, "metadata": {"name": name}, "spec": {"value": value}})


# --- a TCP proxy whose connections a test can cut ------------------------------------------------------------------


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to a target. :meth:`cut` drops every open connection (a watch breaks) and, with
    ``hold``, refuses new ones until :meth:`resume`."""

    def __init__(self, target_host: str, target_port: int, port: int = 0) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self._holding = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def cut(self, *, hold: bool = False) -> None:
        with self._lock:
            self._holding = hold
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def resume(self) -> None:
        with self._lock:
            self._holding = False

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                holding = self._holding
            if holding:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.extend((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])
