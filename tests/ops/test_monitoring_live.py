"""The dashboard and alerts against reality: the metric names the running service
exports, and a real Prometheus scraping the real service."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.commands import require_tool
from tests.helpers.images import BLUISH, REDDISH, write_image
from tests.helpers.network import free_port, wait_for_200
from tests.helpers.onnx_models import TOY_VERSION
from tests.helpers.paths import REPO
from tests.helpers.prometheus import alert_rules, dashboard_targets, exposition_names, promql_metric_names
from tests.helpers.service_process import ServiceProcess, send_prediction, start_service, stop_service

DASHBOARD = REPO / "monitoring" / "grafana" / "dashboards" / "catsdogs.json"
PROMETHEUS_OWN = {"up"}  # series Prometheus itself writes for every target


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def exported_names(url: str) -> set[str]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        return exposition_names(resp.read().decode())


# ------------------------------------------------------------------ dashboard JSON
def test_dashboard_is_well_formed() -> None:
    dash = dashboard()
    assert dash["uid"] == "catsdogs-api" and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dash["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
            assert panel["targets"], f"panel {panel['title']} has no query"
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in (
        "request rate",
        "error",
        "latency",
        "inference",
        "in flight",
        "class mix",
        "confidence",
        "rejections",
        "model",
    ):
        assert topic in titles, f"the dashboard has no {topic} panel"
    exprs = " ".join(expr for _, expr in dashboard_targets(dash))
    for quantile in ("0.5", "0.95", "0.99"):
        wanted = f"histogram_quantile({quantile}, sum by (le) (rate(catsdogs_http_request_duration_seconds_bucket"
        assert wanted in exprs, f"no p{quantile} request latency panel"


def test_dashboard_and_alerts_use_only_metrics_the_service_exports(service: ServiceProcess, tmp_path: Path) -> None:
    # Make every labelled family appear (rejections, predictions) before scraping.
    send_prediction(service.url, write_image(tmp_path / "cat.jpg", REDDISH))
    req = urllib.request.Request(
        f"{service.url}/predict", data=b"not multipart", method="POST", headers={"Content-Type": "text/plain"}
    )
    try:
        urllib.request.urlopen(req, timeout=10)
    except urllib.error.HTTPError:
        pass
    exported = exported_names(service.url) | PROMETHEUS_OWN
    used: dict[str, str] = {}
    for title, expr in dashboard_targets(dashboard()):
        for name in promql_metric_names(expr):
            used.setdefault(name, f"dashboard panel {title!r}")
    for rule in alert_rules():
        for name in promql_metric_names(rule["expr"]):
            used.setdefault(name, f"alert {rule['alert']}")
    unknown = {name: where for name, where in used.items() if name not in exported}
    assert not unknown, f"metrics not exported by the service: {unknown}"
    # ...and the dashboard really shows the service's main families.
    for family in (
        "catsdogs_http_requests_total",
        "catsdogs_http_request_duration_seconds_bucket",
        "catsdogs_inference_duration_seconds_bucket",
        "catsdogs_http_requests_in_flight",
        "catsdogs_predictions_total",
        "catsdogs_prediction_confidence_sum",
        "catsdogs_rejections_total",
        "catsdogs_model_info",
    ):
        assert family in used, f"the dashboard does not use {family}"


def test_metric_name_extraction_sees_through_promql() -> None:
    assert promql_metric_names('label_values(baz_count{job="a"}, route)') == {"baz_count"}
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(foo_bucket{job="a",route=~"$route"}[$__rate_interval]))) '
        '/ on() group_left() sum(rate(bar_total{x="up"}[5m])) or vector(0) and absent(up{job="y"})'
    )
    assert promql_metric_names(expr) == {"foo_bucket", "bar_total", "up"}


# ------------------------------------------------------------------ real Prometheus
class Prometheus:
    def __init__(self, url: str, process: subprocess.Popen, log: Path) -> None:
        self.url, self.process, self.log = url, process, log

    def query(self, expr: str) -> dict:
        qs = urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?{qs}", timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 400 for a bad expression, with a JSON body
            return json.loads(exc.read())

    def vector(self, expr: str) -> dict[str, float]:
        """{label-string: value} of an instant vector query."""
        answer = self.query(expr)
        assert answer["status"] == "success", f"{expr}: {answer}"
        return {json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in answer["data"]["result"]}

    def wait_for(self, expr: str, predicate, timeout: float = 30.0) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        last: dict[str, float] = {}
        while time.monotonic() < deadline:
            last = self.vector(expr)
            if predicate(last):
                return last
            time.sleep(0.5)
        raise AssertionError(
            f"after {timeout:.0f} s Prometheus still answers {last} for {expr}\n"
            f"{self.log.read_text(errors='replace')[-2000:]}"
        )


@pytest.fixture(scope="module")
def live(toy_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, Prometheus]]:
    binary = require_tool("prometheus")
    work = tmp_path_factory.mktemp("prometheus")
    svc = start_service(toy_model, work)  # its own instance: exact counts below
    port = free_port()
    config = work / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {REPO / 'monitoring' / 'alerts.yml'}\n"
        "scrape_configs:\n"
        "  - job_name: catsdogs-api\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{svc.port}']\n"
    )
    log = work / "prometheus.log"
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=work,
    )
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_for_200(f"{prom.url}/-/ready", proc, log, within_s=30, poll_s=0.3)
        yield svc, prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        stop_service(svc)


@pytest.mark.slow
def test_prometheus_scrapes_the_real_service(live, tmp_path: Path) -> None:
    svc, prom = live
    cat, dog = write_image(tmp_path / "cat.jpg", REDDISH), write_image(tmp_path / "dog.png", BLUISH)
    for _ in range(3):
        assert send_prediction(svc.url, cat)["predicted_class"] == "cat"
    for _ in range(2):
        assert send_prediction(svc.url, dog)["predicted_class"] == "dog"

    prom.wait_for('up{job="catsdogs-api"}', lambda v: list(v.values()) == [1.0])
    counts = prom.wait_for(
        'sum by (predicted_class) (catsdogs_predictions_total{job="catsdogs-api"})',
        lambda v: len(v) == 2 and sum(v.values()) == 5,
    )
    assert counts == {'{"predicted_class": "cat"}': 3.0, '{"predicted_class": "dog"}': 2.0}
    assert prom.vector('sum(catsdogs_http_requests_total{job="catsdogs-api",route="/predict",status="200"})') == {
        "{}": 5.0
    }
    assert prom.vector('catsdogs_prediction_confidence_count{job="catsdogs-api"}').popitem()[1] == 5.0
    info = prom.vector('catsdogs_model_info{job="catsdogs-api"}')
    assert len(info) == 1 and json.loads(next(iter(info)))["model_version"] == TOY_VERSION
    buckets = prom.vector('catsdogs_http_request_duration_seconds_bucket{job="catsdogs-api",route="/predict"}')
    assert len(buckets) >= 5 and max(buckets.values()) == 5.0


@pytest.mark.slow
def test_every_dashboard_and_alert_expression_runs_on_real_data(live) -> None:
    _svc, prom = live
    prom.wait_for('sum(catsdogs_predictions_total{job="catsdogs-api"})', lambda v: v and min(v.values()) >= 1)
    time.sleep(3)  # a few more scrapes so short-window rates have two samples
    substitutions = {"$__rate_interval": "1m", "$route": "/predict"}
    empty = []
    for title, expr in dashboard_targets(dashboard()):
        if expr.startswith("label_values("):
            metric = expr[len("label_values(") :].rsplit(",", 1)[0]
            assert prom.vector(f"count({metric})"), f"variable query {expr} finds nothing"
            continue
        for key, value in substitutions.items():
            expr = expr.replace(key, value)
        answer = prom.query(expr)
        assert answer["status"] == "success", f"panel {title!r}: {answer.get('error')}\n{expr}"
        if not answer["data"]["result"]:
            empty.append(title)
    # Panels on error/rejection/reload series may be empty on a healthy toy run; traffic panels may not.
    for title in (
        "Request rate",
        "Requests by route and status",
        "Request latency ($route)",
        "Inference latency (onnxruntime)",
        "Class mix",
        "Mean confidence",
        "Model being served",
        "In flight",
        "API up",
    ):
        assert title not in empty, f"panel {title!r} shows no data against the real service"
    for rule in alert_rules():
        answer = prom.query(rule["expr"])
        assert answer["status"] == "success", f"alert {rule['alert']}: {answer.get('error')}"


@pytest.mark.slow
def test_prometheus_loads_and_evaluates_the_alert_rules(live) -> None:
    _svc, prom = live
    names = {rule["alert"] for rule in alert_rules()}
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(f"{prom.url}/api/v1/rules?type=alert", timeout=10) as resp:
            groups = json.loads(resp.read())["data"]["groups"]
        rules = {r["name"]: r for g in groups for r in g["rules"]}
        evaluated = all(r.get("lastEvaluation", "").startswith("20") for r in rules.values())
        if set(rules) == names and evaluated:
            break
        assert time.monotonic() < deadline, f"rules loaded: {sorted(rules)}, expected {sorted(names)}"
        time.sleep(0.5)
    assert all(r["health"] == "ok" for r in rules.values()), {n: r.get("lastError") for n, r in rules.items()}
    # A healthy, scraped service with a balanced toy mix fires nothing that matters here.
    assert rules["CatsDogsApiDown"]["state"] == "inactive"
