"""The int8 guard judges what its validation split can judge, and a refusal serves fp32 without failing.

Verdicts come from top-1 classes built to hold exact counts of disagreements and lost photos, held
to the committed params.yaml bars (99.5% agreement, 0.2 points of accuracy, 3 tolerated photos).
"""

from __future__ import annotations

import json
import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from export.quantize import GuardReport, judge, track, verdict
from tests.helpers.paths import REPO
from training.params import load_params
from training.tracking import local_tracking_uri, tracked_run

BARS = load_params(REPO / "params.yaml").quantize


def _verdict(images: int, to_wrong: int, to_right: int = 0) -> GuardReport:
    """`images` photos on which int8 turns `to_wrong` of fp32's right answers wrong and `to_right` wrong ones right."""
    labels = np.zeros(images, dtype=int)
    fp32 = labels.copy()
    fp32[to_wrong : to_wrong + to_right] = 1  # fp32's mistakes that int8 corrects
    int8 = fp32.copy()
    int8[: to_wrong + to_right] = 1 - int8[: to_wrong + to_right]
    report = judge(fp32, int8, labels, BARS)
    assert (report.disagreements, report.photos_lost) == (to_wrong + to_right, to_wrong - to_right)
    return report


def _today(images: int, disagreements: int, photos_lost: int) -> bool:
    """The guard before it counted photos: agreement >= min_agreement and drop <= max_accuracy_drop, exactly."""
    agreement = 1 - Fraction(disagreements, images)
    drop = Fraction(photos_lost, images)
    return agreement >= Fraction(str(BARS.min_agreement)) and drop <= Fraction(str(BARS.max_accuracy_drop))


def test_the_committed_bars_are_the_ones_these_numbers_assume() -> None:
    assert (BARS.min_agreement, BARS.max_accuracy_drop, BARS.tolerated_photos) == (0.995, 0.002, 3)


def test_a_hundred_photos_do_not_demand_perfection() -> None:
    """The mini archive's 100 validation photos: 0.5% alone would be 0 photos; the guard allows 3."""
    assert _verdict(100, to_wrong=1).passed  # refused before: 99% < 99.5%
    assert _verdict(100, to_wrong=3).passed  # the 2-epoch run: 97.00%, 3 points lost
    assert _verdict(100, to_wrong=2, to_right=1).passed
    four = _verdict(100, to_wrong=2, to_right=2)
    assert not four.passed and four.photos_lost == 0 and four.allowed_disagreements == 3
    assert not _verdict(100, to_wrong=4).passed


def test_two_thousand_photos_keep_the_full_strength_bars() -> None:
    """The bundled model's split: 10 disagreements (99.50%) and 4 photos lost (0.2 points) are the most allowed."""
    assert _verdict(2000, to_wrong=7, to_right=3).passed
    eleven = _verdict(2000, to_wrong=6, to_right=5)
    assert not eleven.passed and eleven.agreement == pytest.approx(0.9945) and eleven.photos_lost == 1
    five = _verdict(2000, to_wrong=5)
    assert not five.passed and five.accuracy_drop == pytest.approx(0.0025)
    # The committed model's own guard (reports/quantize.json): 99.75% agreement, 0.15 points lost.
    committed = _verdict(2000, to_wrong=4, to_right=1)
    assert committed.passed and committed.agreement == 0.9975 and committed.accuracy_drop == pytest.approx(0.0015)


@pytest.mark.parametrize("images", [1500, 2000, 2500, 4000])
def test_where_the_split_can_judge_the_bars_verdicts_are_exactly_todays(images: int) -> None:
    """Wherever both bars allow >= 3 photos (from 1,500 on), counting photos changes no verdict: every count."""
    for to_wrong in range(0, 2 * int(images * 0.005) + 2):
        for to_right in range(0, 2 * int(images * 0.005) + 2):
            report = _verdict(images, to_wrong, to_right)
            assert report.passed == _today(images, to_wrong + to_right, to_wrong - to_right), (to_wrong, to_right)


def test_an_empty_split_never_passes() -> None:
    assert not judge(np.array([], dtype=int), np.array([], dtype=int), np.array([], dtype=int), BARS).passed


def test_a_refusal_warns_in_one_line_naming_the_release_bar_and_the_fixes() -> None:
    refused = _verdict(100, to_wrong=5, to_right=1)
    report = {"served": "fp32", "bytes": 13_643_302, "refusal": refused.refusal()}
    level, message = verdict(report, Path("models/model.onnx"))
    assert level == logging.WARNING and "\n" not in message
    assert "int8 changes the class of 6 of 100 validation photos (allowed 3)" in message
    assert "loses 4 correct ones (allowed 3)" in message
    assert "Serving the fp32 file models/model.onnx (fp32, 13.0 MiB)" in message
    for fix in ("release.formats", "quantize.calibration_images", "quantize.enabled: false"):
        assert fix in message


def test_a_passed_guard_says_which_file_is_served() -> None:
    report = {"served": "int8", "bytes": 3_922_150, "refusal": None}
    assert verdict(report, Path("models/model.onnx")) == (logging.INFO, "serving models/model.onnx (int8, 3.7 MiB)")


def test_the_report_records_the_counts_and_the_bars_in_photos() -> None:
    figures = _verdict(100, to_wrong=2, to_right=1).as_dict()
    assert figures["disagreements"] == 3 and figures["allowed_disagreements"] == 3
    assert figures["agreement"] == 0.97 and figures["photos_lost"] == 1 and figures["allowed_photos_lost"] == 3
    assert figures["passed"] is True


@pytest.mark.slow
def test_a_refusal_is_tagged_on_the_models_mlflow_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with tracked_run("story", "train-abc123") as tracker:
        run_id = tracker.run_id
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/train.json").write_text(json.dumps({"mlflow_run_id": run_id}))
    refused = _verdict(100, to_wrong=5)
    report = {"enabled": True, "guard": refused.as_dict(), "served": "fp32", "refusal": refused.refusal()}
    report_path = tmp_path / "reports/quantize.json"
    report_path.write_text(json.dumps(report))
    track(report, BARS, report_path)
    run = MlflowClient(local_tracking_uri()).get_run(run_id)
    assert run.data.tags["served_format"] == "fp32" and run.data.tags["quantize_guard"] == "refused"
    assert run.data.tags["quantize_refusal"] == refused.refusal() and run.data.metrics["quantize_passed"] == 0
