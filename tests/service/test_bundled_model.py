"""The committed models/model.onnx: what a fresh clone serves with no configuration."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.config import Settings

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "deploy" / "samples"


@pytest.fixture(scope="module")
def bundled() -> Iterator[TestClient]:
    with TestClient(create_app(Settings.from_env({}))) as client:  # {}: every setting at its default
        yield client


def test_default_settings_serve_the_bundled_model(bundled: TestClient) -> None:
    assert bundled.get("/ready").status_code == 200
    info = bundled.get("/model").json()
    assert info["classes"] == ["cat", "dog"]
    metrics = json.loads((REPO / "models" / "metrics.json").read_text())
    assert info["model_version"] == metrics["model_version"]
    assert info["evaluation"]["accuracy"] == metrics["accuracy"]


@pytest.mark.parametrize("label", ["cat", "dog"])
def test_bundled_model_labels_the_deploy_samples(bundled: TestClient, label: str) -> None:
    """The CI deploy job's smoke test sends these; a retrained model must still get them right."""
    with (SAMPLES / f"{label}.jpg").open("rb") as image:
        body = bundled.post("/predict", files={"file": (f"{label}.jpg", image, "image/jpeg")}).json()
    assert body["predicted_class"] == label
    assert body["confidence"] > 0.8


def test_model_card_quotes_the_bundled_models_own_metrics() -> None:
    """MODEL_CARD.md is hand-written; this catches a retrained model shipped with a stale card."""
    card = (REPO / "models" / "MODEL_CARD.md").read_text()
    metrics = json.loads((REPO / "models" / "metrics.json").read_text())
    assert f"`{metrics['model_version']}`" in card
    assert f"{100 * metrics['accuracy']:.2f}%" in card
    for cls, report in metrics["per_class"].items():
        assert f"{100 * report['accuracy']:.1f}%" in card, f"{cls} accuracy missing from the card"
    labels, matrix = metrics["confusion_matrix"]["labels"], metrics["confusion_matrix"]["matrix"]
    for label, row in zip(labels, matrix, strict=True):
        assert f"| actual {label} | " + " | ".join(str(n) for n in row) + " |" in card


def test_bundled_model_meets_the_release_bar() -> None:
    """What a fresh clone serves must stay ≥95% on the test split, ≥94% per class, ≤10 MB."""
    metrics = json.loads((REPO / "models" / "metrics.json").read_text())
    assert metrics["images"] >= 2000
    assert metrics["accuracy"] >= 0.95
    assert all(report["accuracy"] >= 0.94 for report in metrics["per_class"].values())
    assert (REPO / "models" / "model.onnx").stat().st_size <= 10 * 1024 * 1024
