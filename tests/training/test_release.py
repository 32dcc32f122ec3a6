"""The release bar (params.yaml `release`) decides whether a model served as fp32 after the int8 guard
refused it may be the bundled one; models/metrics.json's `format` says what the served file is."""

from __future__ import annotations

from dataclasses import replace

from service.metadata import ModelMetadata
from service.preprocessing import PreprocessSpec
from tests.helpers.paths import REPO
from tests.helpers.predictions import answers
from training.evaluate import calibration_report, headline
from training.metrics import classification_report
from training.params import load_params
from training.release import MIB, release_failures

BAR = load_params(REPO / "params.yaml").release
FP32_BYTES = 13_643_302  # the bundled recipe's fp32 export: inside release.max_model_mb


def _report(right_per_class: int, confidence: float | None = None) -> dict:
    """The evaluate stage's report for 1,000 test photos per class (see `answers`)."""
    labels, probabilities = answers(1000, right_per_class, confidence)
    report = classification_report(labels, probabilities, ["cat", "dog"])
    return report | {"calibration": calibration_report(labels, probabilities, temperature=1.0)}


def _metadata(quantization: dict) -> ModelMetadata:
    spec = PreprocessSpec(image_size=176, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return ModelMetadata(("cat", "dog"), spec, "v1", "d1", {"val_accuracy": 0.99}, quantization)


def test_metrics_format_comes_from_the_served_files_own_metadata() -> None:
    report = _report(995)
    int8 = _metadata({"format": "int8-qdq-per-channel", "agreement": 0.9975})
    assert headline(report, int8, 3_922_150)["format"] == "int8"
    # What quantize serves when its guard refuses int8: the fp32 export, byte for byte, no quantization record.
    fallback = headline(report, replace(int8, quantization={}), FP32_BYTES)
    assert fallback["format"] == "fp32" and fallback["model_mb"] == round(FP32_BYTES / MIB, 2)


def test_an_accurate_fp32_fallback_misses_the_committed_bar_on_its_format_alone() -> None:
    assert BAR.formats == ("int8",)
    assert release_failures(_report(995), 3_922_150, "int8", BAR) == []
    assert release_failures(_report(995), FP32_BYTES, "fp32", BAR) == ["format fp32 not in release.formats ['int8']"]


def test_listing_fp32_in_release_formats_lets_the_fallback_be_released() -> None:
    assert release_failures(_report(995), FP32_BYTES, "fp32", replace(BAR, formats=("int8", "fp32"))) == []


def test_every_reason_is_named_at_once() -> None:
    failures = release_failures(_report(900), 20 * MIB, "fp32", BAR)
    assert len(failures) == 5, failures  # format, accuracy, each class, size


def test_a_model_whose_confidence_understates_its_accuracy_misses_the_calibration_bar() -> None:
    """99.5% right while saying 90%: the label-smoothed model's shape before its temperature."""
    assert release_failures(_report(995, confidence=0.9), 3_922_150, "int8", BAR) == [
        f"calibration error 0.0950 > release.max_ece {BAR.max_ece}"
    ]
