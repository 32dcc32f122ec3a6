"""The training stage: outputs, weights-only checkpoint, and resume after interruption."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import training.train as train
from tests.helpers.paths import REPO
from tests.helpers.pipeline import stage_args
from training.errors import ParamsError

ARGS = stage_args("train")  # the paths dvc.yaml passes, relative to the workspace


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny prepared dataset where class is visible in the colour, so learning is checkable."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["preprocess"] |= {"image_size": 16, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    # The from-scratch cnn with the recipe these thresholds were measured on, whatever the committed arch.
    params["model"] |= {"arch": "cnn", "pretrained": False, "frozen_blocks": 0, "width": 4, "dropout": 0.1}
    params["train"] |= {"epochs": 2, "batch_size": 16, "threads": 1, "crop_size": None, "lr": 0.004, "jitter": 0.3}
    # Labels alone: the tests that need the audit's soft labels write them and ask for them.
    params["train"] |= {"distill_weight": 0.0, "drop_flagged": False, "mixup_alpha": 0.0}
    Path("params.yaml").write_text(yaml.safe_dump(params))
    rng = np.random.default_rng(0)
    prepared = Path("data/prepared")
    prepared.mkdir(parents=True)
    for split, n in (("train", 64), ("val", 32), ("test", 32)):
        labels = np.arange(n) % 2
        images = rng.integers(0, 100, (n, 16, 16, 3), dtype=np.uint8)
        images[labels == 1, :, :, 0] += 150  # dogs are red
        np.save(prepared / f"{split}_images.npy", images)
        np.save(prepared / f"{split}_labels.npy", labels.astype(np.int64))
    Path("reports").mkdir()
    Path("reports/data.json").write_text(json.dumps({"data_version": "test-version"}))
    return tmp_path


def _history() -> list[dict[str, str]]:
    with Path("reports/train_history.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_training_writes_weights_only_best_model_history_and_metrics(workspace: Path) -> None:
    train.main(ARGS)
    checkpoint = torch.load("models/best_model.pth", weights_only=True)
    assert checkpoint["classes"] == ["cat", "dog"]
    assert checkpoint["data_version"] == "test-version"
    assert [row["epoch"] for row in _history()] == ["1", "2"]
    summary = json.loads(Path("reports/train.json").read_text())
    assert summary["best_val_accuracy"] == max(float(row["val_accuracy"]) for row in _history())
    # The colour cue is easy: two epochs must take validation far past chance (0.5 on 32 images;
    # measured 1.0, with val loss 0.658 -> 0.610), so a loop that stops learning fails here.
    assert summary["best_val_accuracy"] >= 0.9
    assert float(_history()[-1]["val_loss"]) < float(_history()[0]["val_loss"])
    assert summary["images_per_second"] > 0
    assert not Path("models/checkpoint.pth").exists(), "a finished run leaves no resume checkpoint"
    assert Path("mlflow.db").exists()


@pytest.mark.slow
def test_interrupted_training_resumes_from_last_checkpoint(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_evaluate = train.evaluate_cached
    calls = {"n": 0}

    def evaluate_then_die(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train, "evaluate_cached", evaluate_then_die)
    with pytest.raises(KeyboardInterrupt):
        train.main(ARGS)
    assert Path("models/checkpoint.pth").exists()
    first_epoch = torch.load("models/checkpoint.pth", weights_only=False)["history"][0]

    monkeypatch.setattr(train, "evaluate_cached", real_evaluate)
    caplog.set_level("INFO")
    train.main(ARGS)
    assert "resuming from models/checkpoint.pth at epoch 2" in caplog.text
    history = _history()
    assert len(history) == 2
    assert float(history[0]["val_accuracy"]) == first_epoch["val_accuracy"]


@pytest.mark.slow
def test_checkpoint_from_other_params_is_not_resumed(workspace: Path, caplog: pytest.LogCaptureFixture) -> None:
    Path("models").mkdir()
    torch.save({"fingerprint": "someone-else"}, "models/checkpoint.pth")
    caplog.set_level("INFO")
    train.main(ARGS)
    assert "ignoring models/checkpoint.pth" in caplog.text
    assert len(_history()) == 2


def test_cuda_request_without_gpu_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train.pick_device("auto").type == "cpu"
    with pytest.raises(ParamsError, match="train.device: auto"):
        train.pick_device("cuda")


def test_prepared_data_missing_names_the_stage_to_run(workspace: Path) -> None:
    shutil.rmtree("data/prepared")
    with pytest.raises(FileNotFoundError, match="dvc repro prepare"):
        train.main(ARGS)


def _write_soft_labels(flagged: set[int]) -> None:
    """The audit's output for the workspace's 64 training photos: a confident, right teacher."""
    labels = np.load("data/prepared/train_labels.npy")
    rows = [
        f"t/{i}.jpg,train,{['cat', 'dog'][label]},{0.9 if label == 0 else 0.1},{0.1 if label == 0 else 0.9},"
        f"{i in flagged},{['dog', 'cat'][label] if i in flagged else ''}\n"
        for i, label in enumerate(labels)
    ]
    Path("data/teacher").mkdir(parents=True)
    Path("data/teacher/soft_labels.csv").write_text("path,split,label,p_cat,p_dog,flagged,suggested\n" + "".join(rows))


def _set_train_params(**values: object) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["train"] |= values
    Path("params.yaml").write_text(yaml.safe_dump(params))


@pytest.mark.slow
def test_distillation_mixup_and_dropping_flagged_photos_train_from_the_audits_soft_labels(
    workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write_soft_labels(flagged={0, 1, 2, 3})
    _set_train_params(distill_weight=0.5, distill_temperature=2.0, drop_flagged=True, mixup_alpha=0.4, epochs=1)
    caplog.set_level("INFO")
    train.main(ARGS)
    assert "training on 60 of 64 photos (4 flagged by the audit)" in caplog.text
    assert json.loads(Path("reports/train.json").read_text())["train_images"] == 60


def test_a_recipe_that_neither_distils_nor_drops_never_reads_the_soft_labels(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unread(*args: object) -> None:
        raise AssertionError("a labels-only recipe read the soft labels")

    monkeypatch.setattr(train, "load_soft_labels", unread)
    data = train.load_data(train.load_params(), train.TrainPaths(*map(Path, ARGS)), torch.device("cpu"))
    assert data.teacher is None and len(data.train_y) == 64


def test_a_checkpoint_is_not_resumed_once_the_audit_rewrote_the_soft_labels_it_learned_from(workspace: Path) -> None:
    _set_train_params(distill_weight=0.5)
    params, paths, cpu = train.load_params(), train.TrainPaths(*map(Path, ARGS)), torch.device("cpu")

    def fingerprint(flagged: set[int]) -> str:
        shutil.rmtree("data/teacher", ignore_errors=True)
        _write_soft_labels(flagged)
        data = train.load_data(params, paths, cpu)
        return train.run_fingerprint(params, data.version, data.soft_labels_version)

    assert fingerprint(set()) == fingerprint(set())
    assert fingerprint({5}) != fingerprint(set())


def test_soft_labels_for_other_photos_are_refused_with_the_stage_to_rerun(workspace: Path) -> None:
    _write_soft_labels(flagged=set())
    text = Path("data/teacher/soft_labels.csv").read_text().splitlines()
    Path("data/teacher/soft_labels.csv").write_text("\n".join(text[:-1]) + "\n")  # one photo short
    _set_train_params(drop_flagged=True)
    with pytest.raises(FileNotFoundError, match="dvc repro audit"):
        train.main(ARGS)
