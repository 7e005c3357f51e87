"""The Kubernetes source's writes into the real Redis inventory: only changes, and removals after a complete list."""

from __future__ import annotations

import copy
import random
from typing import Any

from agent_tasks.inventory import Change, RedisInventory
from agent_tasks.kube.views import CLUSTER, ClusterView
from agent_tasks.kube.writer import InventoryWriter
from agent_tasks.simulate import make_cluster
from globalhub.protocol.objects import cluster_claim_id


def clusters(count: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    return [make_cluster("hub1", index, rng) for index in range(count)]


def logged(inventory: RedisInventory) -> int:
    return inventory.log_position(CLUSTER).added


def test_an_unchanged_object_is_not_written_again(inventory: RedisInventory) -> None:
    writer = InventoryWriter(inventory, [CLUSTER])
    view = ClusterView()
    obj = clusters(1)[0]
    assert writer.write(view.observe(obj)) == 1
    same = copy.deepcopy(obj)
    same["metadata"]["resourceVersion"] = "123456789"  # a new resourceVersion alone is no change
    assert writer.write(view.observe(same)) == 0
    same["metadata"]["labels"]["environment"] = "moved"
    assert writer.write(view.observe(same)) == 1
    assert logged(inventory) == 2
    stored = inventory.get(CLUSTER, str(cluster_claim_id(obj)))
    assert stored is not None and stored["metadata"]["labels"]["environment"] == "moved"


def test_a_relist_removes_what_the_list_no_longer_has_only_when_the_list_is_complete(
    inventory: RedisInventory,
) -> None:
    writer = InventoryWriter(inventory, [CLUSTER])
    view = ClusterView()
    objects = clusters(5)
    relist = writer.relist()
    relist.add(entry for obj in objects for entry in view.observe(obj))
    assert relist.finish() == 5

    view.reset()
    interrupted = writer.relist()
    interrupted.add(entry for obj in objects[:2] for entry in view.observe(obj))
    # The list broke off here: nothing is removed.
    assert inventory.count(CLUSTER) == 5

    view.reset()
    relist = writer.relist()
    relist.add(entry for obj in objects[:2] for entry in view.observe(obj))
    assert relist.finish() == 3
    assert inventory.ids(CLUSTER) == {str(cluster_claim_id(obj)) for obj in objects[:2]}
    assert writer.count(CLUSTER) == 2


def test_a_relist_judges_the_inventory_as_it_is_not_as_the_writer_remembers(inventory: RedisInventory) -> None:
    writer = InventoryWriter(inventory, [CLUSTER])
    view = ClusterView()
    objects = clusters(3)
    writer.write(entry for obj in objects for entry in view.observe(obj))
    lost = str(cluster_claim_id(objects[0]))
    stray = "6c1d2e3f-0000-4000-8000-00000000abcd"
    inventory.apply(CLUSTER, [Change(lost, None), Change(stray, {"metadata": {"name": "stray"}})])

    view.reset()
    relist = writer.relist()
    relist.add(entry for obj in objects for entry in view.observe(obj))
    assert relist.finish() == 2  # the lost cluster back, the stray one gone
    assert inventory.ids(CLUSTER) == {str(cluster_claim_id(obj)) for obj in objects}


def test_an_id_given_twice_in_one_write_counts_with_its_last_value(inventory: RedisInventory) -> None:
    writer = InventoryWriter(inventory, [CLUSTER])
    view = ClusterView()
    [(_, claim, obj)] = view.observe(clusters(1)[0])
    assert obj is not None
    writer.write([(CLUSTER, claim, obj)])
    changed = copy.deepcopy(obj)
    changed["metadata"]["labels"]["environment"] = "moved"
    # First the change, then back to what is stored: nothing to write.
    assert writer.write([(CLUSTER, claim, changed), (CLUSTER, claim, obj)]) == 0
    assert writer.write([(CLUSTER, claim, obj), (CLUSTER, claim, changed)]) == 1
    stored = inventory.get(CLUSTER, claim)
    assert stored is not None and stored["metadata"]["labels"]["environment"] == "moved"
    assert logged(inventory) == 2
