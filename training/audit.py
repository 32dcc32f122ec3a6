"""Stage: the label-noise audit and the teacher's soft labels, from the cached teacher features.

    python -m training.audit FEATURES SOFT_LABELS FLAGGED SUMMARY   (dvc.yaml passes the paths)

k-fold logistic regression on the training photos' features gives each training photo an
out-of-fold probability (from a model that never saw its label); one fitted on all training
photos gives validation its held-out probabilities. Confident learning (Northcutt et al., 2021)
then flags a photo when another class clears that class's own threshold (the mean probability
the training photos labelled with it get) and its given label does not clear its own.

SOFT_LABELS (cached) feeds the train stage: the teacher's probabilities for distillation and the
flags for `train.drop_flagged`. Validation photos are flagged for the model card only: their
labels are never changed or dropped.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from training.atomic import atomic_path, write_text_atomic
from training.cli import run_stage, stage_parser
from training.errors import MissingInputError, ParamsError
from training.params import TeacherParams, load_params

log = logging.getLogger("audit")


def fit_logistic(features: torch.Tensor, labels: torch.Tensor, classes: int, l2: float) -> torch.nn.Linear:
    """Multinomial logistic regression, full-batch L-BFGS, on features the caller standardised."""
    model = torch.nn.Linear(features.shape[1], classes, dtype=torch.float64)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(features), labels) + l2 * model.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return model


def held_out_probabilities(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, classes: int, l2: float
) -> np.ndarray:
    """Probabilities for `test_x` from a model fitted on the training rows only (standardised by them too)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = torch.from_numpy((train_x - mean) / std).double()
    model = fit_logistic(x, torch.from_numpy(train_y), classes, l2)
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy((test_x - mean) / std).double()), 1).numpy()


def out_of_fold(features: np.ndarray, labels: np.ndarray, classes: int, cfg: TeacherParams) -> np.ndarray:
    """Each row's probabilities from the model fitted on the other folds (folds stratified by label)."""
    rng = np.random.default_rng(cfg.seed)
    fold = np.empty(len(labels), dtype=np.int64)
    for label in range(classes):
        members = rng.permutation(np.flatnonzero(labels == label))
        fold[members] = np.arange(len(members)) % cfg.folds
    probabilities = np.empty((len(labels), classes))
    for k in range(cfg.folds):
        held = fold == k
        probabilities[held] = held_out_probabilities(features[~held], labels[~held], features[held], classes, cfg.l2)
    return probabilities


def class_thresholds(labels: np.ndarray, probabilities: np.ndarray, classes: int) -> np.ndarray:
    """Per-class self-confidence: the mean probability of class j over the photos labelled j."""
    return np.array([probabilities[labels == j, j].mean() for j in range(classes)])


def confident_flags(labels: np.ndarray, probabilities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The class each photo confidently belongs to when that differs from its label, else -1.

    Confidently: the most probable class among those clearing their own threshold; a photo whose
    given label clears its threshold is never flagged.
    """
    above = probabilities >= thresholds
    suggested = np.where(above, probabilities, -1.0).argmax(1)
    given_holds = above[np.arange(len(labels)), labels]
    flagged = above.any(1) & ~given_holds & (suggested != labels)
    return np.where(flagged, suggested, -1)


def scores(name: str, labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float | None]:
    """Accuracy and log loss, the figures that choose teacher.l2 (on validation)."""
    if not len(labels):
        return {f"{name}_accuracy": None, f"{name}_log_loss": None}
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    return {
        f"{name}_accuracy": float((probabilities.argmax(1) == labels).mean()),
        f"{name}_log_loss": float(-np.log(picked).mean()),
    }


def _check_folds(labels: np.ndarray, classes: int, folds: int) -> None:
    smallest = min(int((labels == j).sum()) for j in range(classes))
    if folds < 2 or smallest < folds:
        raise ParamsError(
            f"teacher.folds must be between 2 and the smallest class's training photos ({smallest}), got {folds}"
        )


def audit(features_path: Path, cfg: TeacherParams) -> tuple[list[dict], dict]:
    """One row per train and validation photo (teacher probabilities, flag), and the summary."""
    if not features_path.is_file():
        raise MissingInputError(f"{features_path} is missing; run `dvc repro features`")
    data = np.load(features_path)
    classes = [str(name) for name in data["classes"]]
    features, labels, split = data["features"].astype(np.float64), data["label"], data["split"]
    train, val = split == "train", split == "val"
    _check_folds(labels[train], len(classes), cfg.folds)
    probabilities = np.empty((len(labels), len(classes)))
    probabilities[train] = out_of_fold(features[train], labels[train], len(classes), cfg)
    if val.any():
        probabilities[val] = held_out_probabilities(features[train], labels[train], features[val], len(classes), cfg.l2)
    thresholds = class_thresholds(labels[train], probabilities[train], len(classes))
    suggested = confident_flags(labels, probabilities, thresholds)
    rows = [
        {
            "path": str(data["path"][i]),
            "split": str(split[i]),
            "label": classes[labels[i]],
            **{f"p_{name}": float(probabilities[i, j]) for j, name in enumerate(classes)},
            "flagged": bool(suggested[i] >= 0),
            "suggested": classes[suggested[i]] if suggested[i] >= 0 else "",
        }
        for i in range(len(labels))
    ]
    summary = {
        "teacher": cfg.variant,
        "folds": cfg.folds,
        "thresholds": {name: float(thresholds[j]) for j, name in enumerate(classes)},
        **{f"{name}_photos": int(mask.sum()) for name, mask in (("train", train), ("val", val))},
        **{f"{name}_flagged": int((suggested[mask] >= 0).sum()) for name, mask in (("train", train), ("val", val))},
        **{
            key: value
            for name, mask in (("train_oof", train), ("val", val))
            for key, value in scores(name, labels[mask], probabilities[mask]).items()
        },
    }
    return rows, summary


def write_rows(dest: Path, columns: list[str], rows: list[dict]) -> None:
    with atomic_path(dest) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def arguments() -> argparse.ArgumentParser:
    parser = stage_parser("training.audit", __doc__)
    parser.add_argument("features", type=Path, help="the teacher features the features stage wrote")
    parser.add_argument("soft_labels", type=Path, help="CSV to write: teacher probabilities and flags, train + val")
    parser.add_argument("flagged", type=Path, help="CSV to write: the flagged photos, most confident first")
    parser.add_argument("summary", type=Path, help="JSON to write: thresholds, counts, teacher accuracy")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_params().teacher
    torch.set_num_threads(cfg.threads)
    rows, summary = audit(args.features, cfg)
    columns = list(rows[0])
    write_rows(args.soft_labels, columns, rows)
    # Most confidently mislabelled first: the lowest teacher probability for the given label.
    flagged = sorted((r for r in rows if r["flagged"]), key=lambda r: r[f"p_{r['label']}"])
    write_rows(args.flagged, columns, flagged)
    write_text_atomic(args.summary, json.dumps(summary, indent=2) + "\n")
    log.info(
        "flagged %d of %d training photos and %d of %d validation photos (teacher %s, %d folds)",
        summary["train_flagged"],
        summary["train_photos"],
        summary["val_flagged"],
        summary["val_photos"],
        cfg.variant,
        cfg.folds,
    )


if __name__ == "__main__":
    run_stage(main)
