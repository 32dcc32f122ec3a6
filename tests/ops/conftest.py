"""Fixtures for the ops checks: a toy ONNX model (built with onnx.helper, so no
training is needed) and the real service, started with `python -m service`."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.service_process import ServiceProcess, start_service, stop_service

ROOT = Path(__file__).resolve().parents[2]
TOY_VERSION = "toy-ops-1"


def build_toy_model(path: Path, *, image_size: int = 32, scale: float = 4.0) -> Path:
    """A model honouring the service's contract (input 'image', output 'probabilities',
    metadata_props) that says 'cat' for reddish images and 'dog' for bluish ones:
    logits = scale * [mean(R) - mean(B), mean(B) - mean(R)] of the normalised input."""
    import onnx
    from onnx import TensorProto, helper

    from service.metadata import INPUT_NAME, OUTPUT_NAME, ModelMetadata
    from service.preprocessing import PreprocessSpec

    weights = np.array([[1.0, -1.0], [0.0, 0.0], [-1.0, 1.0]], dtype=np.float32) * scale
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", [INPUT_NAME], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=1),
        ],
        "toy_catsdogs",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, image_size, image_size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor("w", TensorProto.FLOAT, [3, 2], weights.flatten().tolist())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = ModelMetadata(
        classes=("cat", "dog"),
        preprocessing=PreprocessSpec(image_size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        model_version=TOY_VERSION,
        data_version="synthetic",
    )
    for key, value in meta.to_props().items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_image(path: Path, rgb: tuple[int, int, int], size: int = 64) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), rgb).save(path, quality=95)
    return path


REDDISH = (200, 120, 60)  # the toy model says cat
BLUISH = (60, 120, 200)  # the toy model says dog


def require_tool(name: str) -> str:
    path = shutil.which(name) or (
        str(Path(sys.executable).parent / name) if (Path(sys.executable).parent / name).exists() else None
    )
    if path is None:
        fix = (
            "run `bash scripts/ci-system-deps.sh` (installs Debian's prometheus package)"
            if name in ("promtool", "prometheus")
            else "run `pip install -r requirements/ops.txt`"
        )
        pytest.fail(f"`{name}` is not installed; {fix}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def toy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_model(tmp_path_factory.mktemp("model") / "model.onnx")


@pytest.fixture(scope="session")
def service(toy_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    svc = start_service(toy_model, tmp_path_factory.mktemp("service"))
    try:
        yield svc
    finally:
        stop_service(svc)


# --------------------------------------------------------------------------- helpers
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
    import re

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


def load_yaml(path: Path):
    import yaml

    with open(path) as fh:
        return yaml.safe_load(fh)


def alert_rules() -> list[dict]:
    doc = load_yaml(ROOT / "monitoring" / "alerts.yml")
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def send_prediction(url: str, image: Path) -> dict:
    import json

    sys.path.insert(0, str(ROOT / "deploy"))
    from httpclient import predict

    resp = predict(url, image)
    assert resp.status == 200, f"/predict answered {resp.status}: {resp.body[:300]!r}"
    return json.loads(resp.body)
