"""Inventory watcher: ``python -m agent_tasks.watch_kube`` keeps this hub's inventory equal to its Kubernetes API.

One thread per resource lists and watches it (:mod:`agent_tasks.kube.watch`): ManagedClusters, local Policies
(spec and compliance) and ClusterClaims (hub info). The rest of the agent (deltas, resyncs, versions, framing,
confirmed sends) reads the inventory as it does for the simulator.

Credentials: ``KUBECONFIG`` (or ``GH_KUBECONFIG``, with ``GH_KUBE_CONTEXT``), else the pod's service account, else
``~/.kube/config``. Hub info settings: ``GH_HUB_CLUSTER_ID``, ``GH_HUB_CONSOLE_URL``, ``GH_HUB_GRAFANA_URL``,
``GH_HUB_MCH_VERSION``. The source's state is in ``python -m agent_tasks.ctl status`` and the agent's metrics.
SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid

import redis

from agent_tasks.hub import HubConfig
from agent_tasks.inventory import RedisInventory
from agent_tasks.kube.api import Connector
from agent_tasks.kube.status import SourceStatus
from agent_tasks.kube.views import ClusterView, HubInfoView, PolicyView, View
from agent_tasks.kube.watch import KubeSourceSettings, ResourceWatcher
from agent_tasks.kube.writer import InventoryWriter
from globalhub.stopping import call_on_signals

log = logging.getLogger("agent_tasks.watch_kube")

PUBLISH_EVERY = 2.0  # seconds between updates of the source's state in Redis


class InventoryWatcher:
    """The watcher process: one :class:`ResourceWatcher` thread per resource, and the state published to Redis."""

    def __init__(self, config: HubConfig, settings: KubeSourceSettings, client: redis.Redis) -> None:
        self._config = config
        self._settings = settings
        self._status = SourceStatus(client, config.hub_name)
        self.stop_event = threading.Event()
        inventory = RedisInventory(client, config.hub_name)
        connector = Connector(settings.credentials)
        views: list[View] = [ClusterView(), PolicyView(), HubInfoView(settings.hub_info)]
        self.watchers = [
            ResourceWatcher(view, InventoryWriter(inventory, view.types), connector, settings, self.stop_event)
            for view in views
        ]
        self._header = {
            "source": "kubernetes",
            "credentials": settings.credentials.describe(),
            "started_at": repr(time.time()),
        }
        self._epoch = uuid.uuid4().hex  # marks this process's data in Redis; its absence means Redis lost it

    def stop(self) -> None:
        """Stop at once: a watch may be waiting minutes for the server; nothing is lost by leaving it (the threads
        are daemons, and a restart relists)."""
        self.stop_event.set()

    def run(self) -> int:
        """Until stopped (0), or until a watcher's thread died (1: the process should be restarted)."""
        threads = [
            threading.Thread(target=watcher.run, name=f"watch-{watcher.name}", daemon=True) for watcher in self.watchers
        ]
        self._claim_epoch()
        for thread in threads:
            thread.start()
        log.info("hub=%s inventory watcher started (%s)", self._config.hub_name, self._header["credentials"])
        code = 0
        while not self.stop_event.wait(PUBLISH_EVERY):
            self.check_inventory()
            self.publish()
            dead = [thread.name for thread in threads if not thread.is_alive()]
            if dead:
                log.error("hub=%s %s stopped unexpectedly; exiting to be restarted", self._config.hub_name, dead)
                self.stop_event.set()
                code = 1
        for watcher in self.watchers:
            with watcher.state.lock:
                watcher.state.connected = False
        self._header["stopped_at"] = repr(time.time())
        self.publish()
        log.info("hub=%s inventory watcher stopped", self._config.hub_name)
        return code

    def check_inventory(self) -> None:
        """Redis restarted empty (or someone deleted the hub's keys): every resource is listed again."""
        try:
            if self._status.epoch() == self._epoch:
                return
            log.warning("hub=%s the inventory in Redis was lost: listing every resource again", self._config.hub_name)
            self._claim_epoch()
        except redis.RedisError as error:  # Redis is away: nothing to check until it is back
            log.warning("hub=%s cannot check the inventory in Redis: %s", self._config.hub_name, error)
            return
        for watcher in self.watchers:
            watcher.request_relist()

    def _claim_epoch(self) -> None:
        try:
            self._status.claim_epoch(self._epoch)
        except redis.RedisError as error:
            log.warning("hub=%s cannot mark the inventory in Redis: %s", self._config.hub_name, error)

    def publish(self) -> None:
        server = next((w.server for w in self.watchers if w.server), "")
        try:
            self._status.publish({**self._header, "server": server}, {w.name: w.state for w in self.watchers})
        except redis.RedisError as error:
            log.warning("hub=%s cannot publish the source's state: %s", self._config.hub_name, error)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # a line per request; the watcher logs what matters
    config = HubConfig.from_env()
    settings = KubeSourceSettings.from_env()
    watcher = InventoryWatcher(config, settings, redis.Redis.from_url(config.redis_url))

    call_on_signals(watcher.stop)
    sys.exit(watcher.run())


if __name__ == "__main__":
    main()
