"""Prometheus: the service's metrics as tests read them, PromQL names, the alert rules."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.paths import REPO, load_yaml

if TYPE_CHECKING:  # importing starlette's TestClient warns; the service tests import it under a filter
    from starlette.testclient import TestClient

    from tests.helpers.service_process import ServiceProcess


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(server: ServiceProcess, name: str) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


PROMQL_WORDS = {
    # functions, aggregations, keywords and modifiers that may appear in our expressions
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "topk",
    "bottomk",
    "quantile",
    "stddev",
    "group",
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "deriv",
    "histogram_quantile",
    "absent",
    "absent_over_time",
    "abs",
    "clamp_min",
    "clamp_max",
    "vector",
    "scalar",
    "time",
    "label_replace",
    "label_values",
    "avg_over_time",
    "max_over_time",
    "min_over_time",
    "sum_over_time",
    "count_over_time",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (label matchers, ranges, strings and grouping lists removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"label_values\((.*),\s*\w+\s*\)", r"\1", text)  # Grafana variable query
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)", text):
        word = match.group(1)
        if word not in PROMQL_WORDS and not re.fullmatch(r"[0-9.eE+-]+", word):
            names.add(word)
    return names


def exposition_names(text: str) -> set[str]:
    """Sample names in a Prometheus text exposition (e.g. foo_total, foo_bucket)."""
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


def dashboard_targets(dashboard: dict) -> list[tuple[str, str]]:
    """[(panel title, expr)] for every query in the dashboard, template variables included."""
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if query:
            found.append((f"variable {var['name']}", query))
    return found


def alert_rules() -> list[dict]:
    doc = load_yaml(REPO / "monitoring" / "alerts.yml")
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]
