"""The shipped Prometheus rules and Grafana dashboard: parsed (the rules' YAML with PyYAML, every query with a PromQL
parser), with the fields Prometheus and Grafana need, and every metric they name is one the manager's endpoints
actually expose (``/metrics`` of the web process, scraped; a status consumer's own endpoint, served and scraped).

promtool (``promtool check rules``) would check more (templates, rule semantics); it is not installable here. The
PromQL parser is ``promql-parser`` (Rust's promql-parser crate, used by GreptimeDB).
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import redis
import yaml
from django.test import Client
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent_tasks.metrics import AgentCollector
from globalhub.manager.metrics import serve_consumer_metrics

REPO = Path(__file__).resolve().parent.parent
ALERTS = REPO / "deploy/prometheus/alerts.yml"
PROMETHEUS = REPO / "deploy/prometheus/prometheus.yml"
DASHBOARD = REPO / "deploy/grafana/dashboard.json"

# The kinds of alert the issue asks for, each by its rule and the metric its expression must watch.
REQUIRED_ALERTS = {
    "silent hub": ("GlobalhubHubSilent", "globalhub_hub_last_heartbeat_timestamp_seconds"),
    "stalled type": ("GlobalhubTypeStalled", "globalhub_hub_stalled_types"),
    "dead letters rising": ("GlobalhubDeadLettersRising", "globalhub_dead_letters_total"),
    "consumer lag": ("GlobalhubConsumerLag", "globalhub_consumer_lag_messages"),
    "overdue resync": ("GlobalhubResyncOverdue", "globalhub_resync_requests"),
    "manager /metrics down": ("GlobalhubManagerMetricsDown", "up"),
    "agent dead": ("GlobalhubAgentDead", "globalhub_agent_liveness_timestamp_seconds"),
}
OPERATIONS = REPO / "docs/operations.md"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
DURATION = re.compile(r"^\d+[smhd]$")


def exposed_names(text: str) -> set[str]:
    """Every name a query may use for the families in ``text``: the family's and its samples' (a counter's
    ``_total`` even before its first sample)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
    return {name for name in names if name.startswith("globalhub_")}


@pytest.fixture
def web_names(client: Client, db: None) -> set[str]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return exposed_names(response.content.decode())


@pytest.fixture
def consumer_names() -> Iterator[set[str]]:
    server = serve_consumer_metrics("127.0.0.1:0")
    assert server is not None
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            yield exposed_names(response.read().decode())
    finally:
        server.shutdown()
        server.server_close()


def parsed_query(expr: str) -> promql_parser.Expr:
    """The query parsed as PromQL, Grafana's variables given values first (the parser fails on bad syntax)."""
    concrete = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$hub", ".*")
    return promql_parser.parse(concrete)


def selected(expr: str) -> set[str]:
    """The metric names the query selects, read from its syntax tree."""
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(parsed_query(expr), visit)
    return names


def metric_names(expr: str) -> set[str]:
    """The globalhub metric names the query selects, histogram suffixes taken off."""
    names = {name for name in selected(expr) if name.startswith("globalhub_")}
    assert names == set(re.findall(r"globalhub_[a-z_]+", expr)), "a name outside a selector, or a typo"
    return {_without_suffix(name) for name in names}


def _without_suffix(name: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, query) of every panel target."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def test_every_rule_is_complete_and_its_query_parses() -> None:
    document = yaml.safe_load(ALERTS.read_text())
    assert document["groups"] and all(group["name"] and group["rules"] for group in document["groups"])
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))
    for rule in rules():
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert DURATION.match(rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        assert annotations["runbook_url"] == f"docs/operations.md#{rule['alert'].lower()}", rule["alert"]
        parsed_query(rule["expr"])


def test_the_rules_cover_every_required_kind_of_alert() -> None:
    by_name = {rule["alert"]: rule for rule in rules()}
    for kind, (alert, metric) in REQUIRED_ALERTS.items():
        assert alert in by_name, kind
        assert metric in selected(by_name[alert]["expr"]), f"{kind}: {alert} does not watch {metric}"


@pytest.fixture
def agent_names(redis_client: redis.Redis, hub_name: str) -> set[str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(redis_client, hub_name))
    return exposed_names(generate_latest(registry).decode())


def test_every_metric_a_rule_or_the_dashboard_names_is_exposed(
    web_names: set[str], consumer_names: set[str], agent_names: set[str]
) -> None:
    exposed = web_names | consumer_names | agent_names
    queries = [(rule["alert"], rule["expr"]) for rule in rules()] + dashboard_targets()
    for where, expr in queries:
        unknown = metric_names(expr) - exposed
        assert not unknown, f"{where}: {sorted(unknown)} not exposed"
    assert "globalhub_ingest_batch_duration_seconds" in consumer_names - web_names  # each endpoint serves its own


def test_the_dashboard_has_a_prometheus_datasource_variable_and_the_issues_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39 and dashboard["uid"] and dashboard["title"]
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert all(target["datasource"]["uid"] == "${datasource}" for target in panel["targets"]), panel["title"]
    queries = [expr for _, expr in dashboard_targets()]
    wanted = {
        "fleet overview (hubs up/down)": r"globalhub_hub_up\) == 1.*|globalhub_hub_up\) == 0",
        "heartbeat age per hub": r"time\(\) - globalhub_hub_last_heartbeat_timestamp_seconds",
        "stalled types": r"globalhub_hub_type_stalled_since_timestamp_seconds",
        "ingest rows/s per type": r"max by \(type\) \(rate\(globalhub_ingest_rows_total\[",
        "batch p50": r"histogram_quantile\(0\.5, .*globalhub_ingest_batch_duration_seconds_bucket",
        "batch p99": r"histogram_quantile\(0\.99, .*globalhub_ingest_batch_duration_seconds_bucket",
        "dead letters by reason class": r"by \(reason_class\) \(increase\(globalhub_dead_letters_total",
        "consumer lag": r"globalhub_consumer_lag_messages",
        "resync requests by status": r"by \(status\) \(globalhub_resync_requests",
        "probe duration": r"globalhub_probe_duration_seconds",
    }
    for panel, pattern in wanted.items():
        assert any(re.search(pattern, expr) for expr in queries), panel


def test_prometheus_scrapes_both_endpoints_and_loads_the_rules() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"globalhub-manager", "globalhub-consumer", "globalhub-agent"}
    scraped = {rule["expr"] for rule in rules() if "up{job=" in rule["expr"]}
    assert {f'up{{job="{name}"}} == 0' for name in jobs} == scraped  # each job has its "down" alert


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub makes of a document's headings: lower case, punctuation dropped, spaces to dashes."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


def test_every_alert_has_its_runbook_section_in_the_operations_guide() -> None:
    guide = OPERATIONS.read_text()
    anchors = github_anchors(guide)
    for rule in rules():
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/operations.md", url
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in docs/operations.md"
        assert f"`{rule['alert']}`" in guide, f"{rule['alert']} is not in the alerts table of docs/operations.md"
