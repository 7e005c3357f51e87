"""The fleet's inventories: seeded like the simulator's hubs, and changed at a total rate across hubs.

Seeding calls the simulator's own ``populate`` (``agent_tasks/simulate.py``), so objects have the shapes and sizes
of the other benchmarks. Changes are of three kinds, drawn by weight:

* ``managedcluster``: a label change (``churn`` + 1, a new ``resourceVersion``);
* ``policy.localspec``: an annotation change (a new ``resourceVersion``);
* ``policy.localcompliance``: one (policy, cluster) pair moves to another compliance list.

**Tracing a change to its row.** Every cluster and policy change writes its creation time (epoch seconds, six
decimals) into the object's annotation :data:`CHANGED_AT`. The manager stores the whole object in ``payload``, so
``payload->'metadata'->'annotations'->>'bench.globalhub.io/changed-at'`` next to the row's ``updated_at`` gives
the latency with no join, in any number of fleet processes, even when one object changed several times before a
delta went out (the row holds the last change, and its time). A compliance row has no payload to carry it, so
every change is also written to the change log (:class:`ChangeLog`, CSV); compliance latency is the join of
``(hub, policy_id, cluster_name, compliance)`` with the last logged change of that pair before the row's
``updated_at``.
"""

from __future__ import annotations

import csv
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from agent_tasks.inventory import Change
from agent_tasks.simulate import CLUSTER as CLUSTERS
from agent_tasks.simulate import COMPLIANCE, POLICY, Compliance, HubState, compliance_entry, populate
from bench.fleet.memory import MemoryInventory
from globalhub.protocol.digest import COMPLIANCE_FIELDS

CHANGED_AT: Final = "bench.globalhub.io/changed-at"
DEFAULT_MIX: Final = {CLUSTERS: 0.5, POLICY: 0.1, COMPLIANCE: 0.4}
_FLIP_ORDER: Final = (Compliance.COMPLIANT, Compliance.NON_COMPLIANT, Compliance.PENDING, Compliance.UNKNOWN)


@dataclass(frozen=True)
class Shape:
    """What each hub holds: ``compliance`` is compliance rows per hub, spread evenly over the policies (each policy
    applies to ``compliance // policies`` clusters, as many as there are at most)."""

    clusters: int = 100
    policies: int = 10
    compliance: int = 50

    @property
    def clusters_per_policy(self) -> int:
        return min(self.clusters, self.compliance // self.policies) if self.policies else 0


def seed_hub(inventory: MemoryInventory, hub: str, shape: Shape, seed: int) -> HubState:
    """Fill a hub's inventory with the simulator's objects; the same hub name and seed give the same objects."""
    result = populate(
        inventory,
        hub,
        clusters=shape.clusters,
        policies=shape.policies,
        clusters_per_policy=shape.clusters_per_policy,
        seed=seed,
    )
    return result.state


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One change as the change log keeps it; ``cluster`` and ``status`` only for compliance."""

    changed_at: float
    hub: str
    type: str
    object_id: str
    cluster: str = ""
    status: str = ""


class ChangeLog:
    """Appends every change to a CSV file (header first) that a benchmark joins with the manager's rows."""

    FIELDS: Final = ("changed_at", "hub", "type", "object_id", "cluster", "status")

    def __init__(self, path: Path | None) -> None:
        self._file: IO[str] | None = None
        if path is not None:
            self._file = path.open("w", newline="", encoding="utf-8")
            self._writer = csv.writer(self._file)
            self._writer.writerow(self.FIELDS)
        self.count = 0

    def write(self, record: ChangeRecord) -> None:
        self.count += 1
        if self._file is not None:
            self._writer.writerow(
                [f"{record.changed_at:.6f}", record.hub, record.type, record.object_id, record.cluster, record.status]
            )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@dataclass
class SeededHub:
    """What the change maker needs of a hub: its name, inventory and the simulator's record of what it wrote."""

    name: str
    inventory: MemoryInventory
    state: HubState


class ChangeMaker:
    """Turns elapsed time into changes at ``per_second`` in total over ``hubs``, each on a hub drawn at random.

    A fractional accumulator keeps the rate exact at any tick length. Same seed, same sequence of changes.
    """

    def __init__(
        self,
        hubs: Sequence[SeededHub],
        per_second: float,
        *,
        mix: Mapping[str, float] = DEFAULT_MIX,
        seed: int = 1,
        log: ChangeLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._hubs = list(hubs)
        self._rate = per_second
        self._kinds = [name for name, weight in mix.items() if weight > 0]
        self._weights = [mix[name] for name in self._kinds]
        self._rng = random.Random(f"{seed}:fleet-changes")
        self._pending = 0.0
        self._log = log or ChangeLog(None)
        self._clock = clock
        self._resource_version = 20_000_000

    def step(self, elapsed_seconds: float) -> int:
        """Make the changes due after ``elapsed_seconds`` more; returns how many were made."""
        self._pending += max(0.0, self._rate * elapsed_seconds)
        due = int(self._pending + 1e-9)
        self._pending -= due
        if not self._hubs or not self._kinds:
            return 0
        for _ in range(due):
            hub = self._hubs[self._rng.randrange(len(self._hubs))]
            self.make(hub, self._rng.choices(self._kinds, self._weights)[0])
        return due

    def make(self, hub: SeededHub, kind: str) -> ChangeRecord | None:
        """One change of ``kind`` on ``hub`` (a cluster change when the hub has no policy); None when it has none."""
        if kind in (POLICY, COMPLIANCE) and not hub.state.compliance:
            kind = CLUSTERS
        record = self._flip(hub) if kind == COMPLIANCE else self._touch(hub, kind)
        if record is not None:
            self._log.write(record)
        return record

    def _touch(self, hub: SeededHub, kind: str) -> ChangeRecord | None:
        object_id = self._pick_object(hub, kind)
        if object_id is None:
            return None
        obj = hub.inventory.get(kind, object_id)
        if obj is None:
            return None
        now = self._clock()
        _stamp(obj, now, self._next_resource_version())
        if kind == CLUSTERS:
            labels = obj["metadata"].setdefault("labels", {})
            labels["churn"] = str(int(labels.get("churn", "0")) + 1)
        hub.inventory.apply(kind, [Change(object_id, obj)])
        return ChangeRecord(now, hub.name, kind, object_id)

    def _pick_object(self, hub: SeededHub, kind: str) -> str | None:
        state = hub.state
        if kind == CLUSTERS:
            return state.cluster_ids[state.live.choice(self._rng)] if len(state.live) else None
        uids = sorted(state.compliance)
        return uids[self._rng.randrange(len(uids))] if uids else None

    def _flip(self, hub: SeededHub) -> ChangeRecord | None:
        """Move one (policy, cluster) pair to the next compliance list and write the policy's compliance entry."""
        candidates = sorted(uid for uid, members in hub.state.compliance.items() if members)
        if not candidates:
            return None
        uid = candidates[self._rng.randrange(len(candidates))]
        members = hub.state.compliance[uid]
        cluster = sorted(members)[self._rng.randrange(len(members))]
        new = _FLIP_ORDER[(_FLIP_ORDER.index(members[cluster]) + 1) % len(_FLIP_ORDER)]
        members[cluster] = new
        now = self._clock()
        hub.inventory.apply(COMPLIANCE, [Change(uid, compliance_entry(uid, members))])
        return ChangeRecord(now, hub.name, COMPLIANCE, uid, cluster, COMPLIANCE_FIELDS[new.value])

    def _next_resource_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)


def _stamp(obj: dict[str, Any], now: float, resource_version: str) -> None:
    metadata = obj.setdefault("metadata", {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), CHANGED_AT: f"{now:.6f}"}
    metadata["resourceVersion"] = resource_version
