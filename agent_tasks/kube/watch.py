"""One list-watch loop per resource: the inventory follows the API server, whatever happens to the connection.

* **Start** (and after any doubt): list every object, page by page, and reconcile the inventory with the list:
  changed objects are written, objects the list no longer has are removed (so they reach the manager as deletes).
  Pages are served from the API server's watch cache, at a resourceVersion no older than the newest one seen (at
  start: the one the cache has reached), several times faster than a consistent read from etcd. While a list
  runs, full resyncs of its types wait (``RedisInventory.mark_filling``).
* **Watch** from the list's resourceVersion, with bookmarks, for a few minutes at a time; each change is written
  at once. When the server ends the watch, or the connection breaks, the watch resumes from the last
  resourceVersion seen (bookmarks move it too).
* **410 Gone** (the resourceVersion was compacted, or the server restarted without it): relist and reconcile,
  counted in ``relists``.
* **Errors** (unreachable, 401, 403, a missing CRD, a Redis failure): a clear log line, the state in Redis, and a
  retry with exponential backoff up to ``GH_KUBE_RETRY_MAX``; credentials are read again at every retry. A failed
  write to the inventory is followed by a relist, since the inventory may have missed a change, and so is a
  request from the process (:meth:`ResourceWatcher.request_relist`: Redis lost the inventory).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

import redis

from agent_tasks.kube.api import Connector, Credentials, Gone, KubeApi, KubeError, Page, WatchEvent
from agent_tasks.kube.status import ResourceState
from agent_tasks.kube.views import HubInfoSettings, View
from agent_tasks.kube.writer import InventoryWriter
from globalhub.envconf import env_duration, env_int, env_str

log = logging.getLogger(__name__)

FIRST_RETRY = 0.5
QUIET_WATCH = 1.0  # seconds: a watch that ends sooner without an event counts as a failure


@dataclass(frozen=True)
class KubeSourceSettings:
    credentials: Credentials = field(default_factory=Credentials)
    hub_info: HubInfoSettings = field(default_factory=HubInfoSettings)
    watch_timeout: timedelta = timedelta(minutes=5)  # a watch lasts this long to 1.5 times this long
    page_size: int = 250  # objects per list page: 500 costs the watcher 15 MB more at 10,000 clusters, for 0.4 s less
    retry_max: timedelta = timedelta(seconds=30)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KubeSourceSettings:
        hub_info = HubInfoSettings(
            cluster_id=env_str("GH_HUB_CLUSTER_ID", "", environ),
            console_url=env_str("GH_HUB_CONSOLE_URL", "", environ),
            grafana_url=env_str("GH_HUB_GRAFANA_URL", "", environ),
            mch_version=env_str("GH_HUB_MCH_VERSION", "", environ),
        )
        return cls(
            credentials=Credentials.from_env(environ),
            hub_info=hub_info,
            watch_timeout=max(env_duration("GH_KUBE_WATCH_TIMEOUT", "5m", environ), timedelta(seconds=1)),
            page_size=env_int("GH_KUBE_LIST_PAGE_SIZE", 250, environ, minimum=1),
            retry_max=max(env_duration("GH_KUBE_RETRY_MAX", "30s", environ), timedelta(seconds=FIRST_RETRY)),
        )


class _ListExpired(Exception):
    """A list's continue token expired between pages."""


class ResourceWatcher:
    """Keeps one view's inventory types equal to what the API server has; :meth:`run` until ``stop`` is set."""

    def __init__(
        self,
        view: View,
        writer: InventoryWriter,
        connector: Connector,
        settings: KubeSourceSettings,
        stop: threading.Event,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.view = view
        self.writer = writer
        self.state = ResourceState()
        self._connector = connector
        self._settings = settings
        self._stop = stop
        self._clock = clock
        self._api: KubeApi | None = None
        self.server = ""  # the API server last connected to
        self._resource_version = ""  # where the watch resumes; empty: relist first
        self._newest = ""  # the newest resourceVersion seen: a relist is never older
        self._relist_requested = threading.Event()
        self._failures = 0

    @property
    def name(self) -> str:
        return self.view.resource.plural

    def request_relist(self) -> None:
        """List again as soon as possible, breaking an open watch (from another thread: the inventory was lost)."""
        self._relist_requested.set()
        api = self._api
        if api is not None:
            api.interrupt()

    def run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
        self._disconnect()

    def run_once(self) -> None:
        """One step: (re)list if needed, then one watch; an error is logged, recorded and waited out."""
        if self._relist_requested.is_set():
            self._relist_requested.clear()
            self._resource_version = ""
        try:
            api = self._connect()
            if not self._resource_version:
                self._relist(api)
            self._watch(api)
        except Gone as error:
            log.warning("%s", error)
            self._resource_version = ""
            self._failures += 1
            self._record(str(error))
            self._backoff(first_is_free=True)
        except KubeError as error:
            if self._stop.is_set() or self._relist_requested.is_set():  # interrupted on purpose
                return
            log.error("kubernetes source: %s; retrying", error)
            self._disconnect()  # the next attempt reads the credentials again
            self._fail(str(error))
        except redis.RedisError as error:
            log.error("kubernetes source: cannot write the inventory of %s (%s); will relist", self.name, error)
            self._resource_version = ""
            self._fail(f"inventory: {error}")
        except Exception as error:  # a bug must not stop the source: log it whole, start over from a relist
            log.exception("kubernetes source: unexpected error while following %s", self.name)
            self._resource_version = ""
            self._disconnect()
            self._fail(f"unexpected: {error!r}")

    # --- list and watch --------------------------------------------------------------------------------------------

    def _connect(self) -> KubeApi:
        if self._api is None:
            self._api = self._connector.open()
            self.server = self._api.server
        return self._api

    def _disconnect(self) -> None:
        api, self._api = self._api, None
        if api is not None:
            api.close()
        with self.state.lock:
            self.state.connected = False

    def _relist(self, api: KubeApi) -> None:
        """List everything and reconcile; full resyncs of the view's types wait meanwhile (the inventory's mark)."""
        started = time.monotonic()
        inventory = self.writer.inventory
        inventory.mark_filling(self.writer.types)
        try:
            page = self._list(api)
        finally:
            inventory.done_filling(self.writer.types)
        self._resource_version = self._newest = page.resource_version
        seconds = time.monotonic() - started
        now = self._clock()
        with self.state.lock:
            self.state.relists += 1
            self.state.last_relist_at = now
            self.state.last_relist_seconds = round(seconds, 3)
            self.state.last_contact_at = now
            self.state.resource_version = self._resource_version
            self._count_objects()
        self._failures = 0
        log.info(
            "kubernetes source: listed %d %s at resourceVersion %s in %.0f ms",
            self.view.objects,
            self.view.resource.name,
            self._resource_version,
            seconds * 1000,
        )

    def _list(self, api: KubeApi) -> Page:
        """One complete list, reconciled with the inventory; returns its last page."""
        resource = self.view.resource
        while True:
            relist = self.writer.relist()
            self.view.reset()
            # Not older than what was seen already; at start, what the server's watch cache has reached.
            floor = self._newest or api.cached_resource_version(resource)
            try:
                for page in self._pages(api, floor):
                    relist.add(entry for obj in page.items for entry in self.view.observe(obj))
                    self.writer.inventory.mark_filling(self.writer.types)
            except _ListExpired:
                log.info("the list of %s expired between pages; listing again from the start", resource.name)
                self._stop.wait(FIRST_RETRY)
                continue
            relist.add(self.view.settled())
            written = relist.finish()
            log.info("kubernetes source: %s reconciled: %d inventory changes", resource.name, written)
            return page

    def _pages(self, api: KubeApi, floor: str) -> Iterator[Page]:
        """The pages of one list, not older than ``floor``; each next page is fetched while the caller works on the
        one before (the API server and this process overlap)."""
        resource, size = self.view.resource, self._settings.page_size
        with ThreadPoolExecutor(1, thread_name_prefix=f"list-{self.name}") as fetcher:
            future = fetcher.submit(api.list_page, resource, limit=size, not_older_than=floor)
            first = True
            while True:
                try:
                    page = future.result()
                except Gone:
                    if first:
                        raise
                    raise _ListExpired from None  # the continue token expired: only a new list helps
                first = False
                if page.continue_token:
                    future = fetcher.submit(api.list_page, resource, limit=size, continue_token=page.continue_token)
                yield page
                if not page.continue_token:
                    return

    def _watch(self, api: KubeApi) -> None:
        resource = self.view.resource
        timeout = self._settings.watch_timeout.total_seconds()
        seconds = max(1, int(random.uniform(timeout, timeout * 1.5)))
        opened = time.monotonic()
        events = api.watch(resource, self._resource_version, timeout_seconds=seconds)
        with self.state.lock:
            self.state.connected = True
            self.state.watch_restarts += 1
        if self._relist_requested.is_set():  # asked for while this watch was being opened
            events.close()
            return
        heard = False
        for event in events:
            heard = True
            self._failures = 0  # the server answers: a later failure starts its backoff afresh
            self._handle(event)
            if self._stop.is_set() or self._relist_requested.is_set():
                return
        if not heard and time.monotonic() - opened < min(seconds, QUIET_WATCH):
            # A watch that ends at once, saying nothing (a proxy closing streams), must not be reopened in a loop.
            raise KubeError(f"the watch of {resource.name} on {api.server} ended at once without an event")

    def _handle(self, event: WatchEvent) -> None:
        now = self._clock()
        if event.type != "BOOKMARK":
            changes = self.view.forget(event.object) if event.type == "DELETED" else self.view.observe(event.object)
            self.writer.write(changes)
        self._resource_version = self._newest = event.resource_version or self._resource_version
        with self.state.lock:
            self.state.last_contact_at = now
            if event.type != "BOOKMARK":
                self.state.last_event_at = now
                self._count_objects()
            self.state.resource_version = self._resource_version

    # --- bookkeeping -----------------------------------------------------------------------------------------------

    def _count_objects(self) -> None:
        """Under the state's lock."""
        self.state.objects = self.view.objects
        self.state.type_objects = {short: self.writer.count(short) for short in self.writer.types}

    def _record(self, error: str) -> None:
        self.state.failed(error, self._clock())

    def _fail(self, error: str) -> None:
        self._failures += 1
        self._record(error)
        self._backoff(first_is_free=False)

    def _backoff(self, *, first_is_free: bool) -> None:
        """Wait before the next attempt: 0.5 s doubling to the maximum, with jitter (a first 410 relists at once)."""
        attempt = self._failures - (1 if first_is_free else 0)
        if attempt <= 0:
            return
        ceiling = self._settings.retry_max.total_seconds()
        delay = min(ceiling, FIRST_RETRY * 2 ** min(attempt - 1, 30))
        self._stop.wait(random.uniform(delay / 2, delay))
