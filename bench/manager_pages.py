"""Issue 14: how fast the operator's pages answer with a whole fleet in the database.

    .venv/bin/python bench/manager_pages.py --database-url postgres://globalhub:globalhub@127.0.0.1:55432/<db>

Point it at a database filled by ``bench/fleet_ingest.py --hubs 1000 --keep`` (1,000 hubs of 100 clusters, 10
policies and 50 compliance rows: 160,000 rows). It migrates nothing and writes only a superuser
(``bench-pages``, no password: the client logs in with ``force_login``) and that user's sessions.

For each page, Django's test ``Client`` (in this process, the production settings: ``DEBUG`` off) requests it
``--repeat`` times after one warm-up request, and the table shows the median and the slowest wall time of the
request, the number of SQL statements it ran (counted by an ``execute_wrapper``, so the same whatever ``DEBUG``
says), the time spent in SQL, and the size of the response. The pages: the overview (``/admin/``), the hub list
(default order and sorted by its clusters column), one hub's page, the cluster list (default, with a label filter,
with a search), the compliance list, ``/metrics``, and the API's ``/api/clusters/?limit=100`` (also with two
label filters) and ``/api/hubs/``.

The database's sizes go to stderr first. A page that ran a statement per hub would show a count in the hundreds
here; compare with a smaller fleet to see that none grows. The last stdout line is the JSON of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

USER = "bench-pages"


@dataclass(frozen=True)
class Figure:
    page: str
    url: str
    status: int
    median_ms: float
    max_ms: float
    queries: int
    sql_ms: float
    kib: float


class Statements:
    """Counts the SQL statements run and the time they took (a ``connection.execute_wrapper``)."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - started
            self.count += 1


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "globalhub.settings")
    os.environ.setdefault("DJANGO_DEBUG", "false")  # as deployed: no query log kept in memory
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-manager-pages-" + "x" * 40)
    import django

    django.setup()
    from django.test.utils import setup_test_environment

    setup_test_environment()  # "testserver" becomes an allowed host


def pages() -> list[tuple[str, str]]:
    """(what, URL) of each page measured; the hub page and the search use a hub in the middle of the list."""
    from globalhub.manager.models import Hub, ManagedCluster

    names = list(Hub.objects.order_by("name").values_list("name", flat=True))
    if not names:
        raise SystemExit("no hubs in this database: fill it with bench/fleet_ingest.py --hubs 1000 --keep")
    middle = names[len(names) // 2]
    cluster = ManagedCluster.objects.filter(hub_id=middle).order_by("cluster_name").values_list("cluster_name")[:1]
    search = (cluster[0][0] if cluster else middle)[-12:]
    return [
        ("overview", "/admin/"),
        ("hub list", "/admin/manager/hub/"),
        ("hub list by clusters", "/admin/manager/hub/?o=-6"),
        ("hub page", f"/admin/manager/hub/{middle}/change/"),
        ("cluster list", "/admin/manager/managedcluster/"),
        ("clusters, label filter", "/admin/manager/managedcluster/?label=cloud%3DAmazon%2Cenvironment%3Dprod"),
        ("clusters, search", f"/admin/manager/managedcluster/?q={search}"),
        ("compliance list", "/admin/manager/localcompliance/"),
        ("/metrics", "/metrics"),
        ("api clusters", "/api/clusters/?limit=100"),
        ("api clusters, label", "/api/clusters/?limit=100&label=cloud%3DAmazon&label=environment%3Dprod"),
        ("api hubs", "/api/hubs/"),
    ]


def measure(client: Any, what: str, url: str, repeat: int) -> Figure:
    from django.db import connection

    client.get(url)  # warm-up: caches, the session, PostgreSQL's buffers
    times, sql_times, counts = [], [], []
    status, size = 0, 0
    for _ in range(repeat):
        statements = Statements()
        with connection.execute_wrapper(statements):
            started = time.perf_counter()
            response = client.get(url)
            elapsed = time.perf_counter() - started
        times.append(elapsed)
        sql_times.append(statements.seconds)
        counts.append(statements.count)
        status, size = response.status_code, len(response.content)
    return Figure(
        page=what,
        url=url,
        status=status,
        median_ms=round(statistics.median(times) * 1000, 1),
        max_ms=round(max(times) * 1000, 1),
        queries=max(counts),
        sql_ms=round(statistics.median(sql_times) * 1000, 1),
        kib=round(size / 1024, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", ""),
        help="the fleet's database (default: $DATABASE_URL)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="requests per page after one warm-up (median shown)")
    parser.add_argument("--only", action="append", default=[], help="measure only the pages whose name has this")
    args = parser.parse_args()
    if not args.database_url:
        parser.error("--database-url (or DATABASE_URL) is required")

    setup_django(args.database_url)
    from django.contrib.auth import get_user_model
    from django.test import Client

    from globalhub.manager.models import Hub, LocalCompliance, LocalPolicy, ManagedCluster

    user, created = get_user_model().objects.get_or_create(
        username=USER, defaults={"is_staff": True, "is_superuser": True}
    )
    if created:
        user.set_unusable_password()
        user.save()
    client = Client()
    client.force_login(user)

    sizes = {
        "hubs": Hub.objects.count(),
        "clusters": ManagedCluster.objects.count(),
        "policies": LocalPolicy.objects.count(),
        "compliance": LocalCompliance.objects.count(),
    }
    print(", ".join(f"{n:,} {what}" for what, n in sizes.items()), file=sys.stderr)
    figures = []
    for what, url in pages():
        if args.only and not any(part in what for part in args.only):
            continue
        figures.append(measure(client, what, url, args.repeat))
        print(f"  {what}: {figures[-1].median_ms} ms", file=sys.stderr)

    print(f"{'page':<24} {'status':>6} {'median ms':>10} {'max ms':>8} {'queries':>8} {'SQL ms':>8} {'KiB':>7}")
    for f in figures:
        print(f"{f.page:<24} {f.status:>6} {f.median_ms:>10} {f.max_ms:>8} {f.queries:>8} {f.sql_ms:>8} {f.kib:>7}")
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    print(json.dumps({"sizes": sizes, "repeat": args.repeat, "load": load, "pages": [asdict(f) for f in figures]}))


if __name__ == "__main__":
    main()
