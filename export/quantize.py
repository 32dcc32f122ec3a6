"""Stage: the fp32 ONNX file -> the served model, int8 behind a guard.

    python -m export.quantize FP32_MODEL IMAGES_ZIP SPLIT_CSV SERVED_MODEL REPORT   (dvc.yaml passes the paths)

onnxruntime static quantization: QDQ format, per-channel int8 weights, uint8 activations
calibrated on training images that went through the one preprocessing contract. The
softmax stays float, so each output row still sums to 1 (the service checks that).

The guard runs both files on the whole validation split through the service's own
loader. int8 must agree with fp32 on at least `min_agreement` of the images and lose at
most `max_accuracy_drop` of accuracy, counted in photos and never below
`tolerated_photos`: a split of n photos cannot vouch for a rate below about 3/n. If it
does not, the fp32 file (already proven by the parity gate) becomes the served one, the
report and a warning say so, and the pipeline goes on; params.yaml `release.formats`
decides whether such a model may be the bundled one. `quantize.enabled: false` ships
fp32 on purpose.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from tqdm import tqdm

from service.metadata import INPUT_NAME, ModelMetadata
from service.model import OnnxModel, SessionTuning, load_model
from service.preprocessing import PreprocessSpec, preprocess
from training.cli import run_stage, stage_parser
from training.dataset import LabelledImage, split_images
from training.params import QuantizeParams, load_params
from training.tracking import failure_marks_run, reopened_run, train_run_id

BATCH = 64

log = logging.getLogger("export.quantize")


class ImageBatches(CalibrationDataReader):
    """Feeds calibration images to onnxruntime as preprocessed batches, like the service would."""

    def __init__(self, images: Sequence[bytes], spec: PreprocessSpec, batch: int = 16) -> None:
        self.batches = iter(
            [
                np.concatenate([preprocess(data, spec) for data in images[start : start + batch]])
                for start in range(0, len(images), batch)
            ]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: batch}


@dataclass(frozen=True)
class GuardReport:
    """The guard's counts on the validation split and the bars they are held to."""

    images: int
    disagreements: int  # photos whose top-1 class int8 changes
    fp32_correct: int
    int8_correct: int
    min_agreement: float
    max_accuracy_drop: float
    tolerated_photos: int

    @property
    def agreement(self) -> float:
        return 1 - self.disagreements / self.images if self.images else 0.0

    @property
    def fp32_accuracy(self) -> float:
        return self.fp32_correct / self.images if self.images else 0.0

    @property
    def int8_accuracy(self) -> float:
        return self.int8_correct / self.images if self.images else 0.0

    @property
    def accuracy_drop(self) -> float:
        return self.fp32_accuracy - self.int8_accuracy

    @property
    def photos_lost(self) -> int:
        return self.fp32_correct - self.int8_correct

    @property
    def allowed_disagreements(self) -> int:
        return photo_bar(self.images, 1 - self.min_agreement, self.tolerated_photos)

    @property
    def allowed_photos_lost(self) -> int:
        return photo_bar(self.images, self.max_accuracy_drop, self.tolerated_photos)

    @property
    def passed(self) -> bool:
        return (
            self.images > 0
            and self.disagreements <= self.allowed_disagreements
            and self.photos_lost <= self.allowed_photos_lost
        )

    def as_dict(self) -> dict[str, object]:
        figures = ("agreement", "fp32_accuracy", "int8_accuracy", "accuracy_drop")
        counts = ("photos_lost", "allowed_disagreements", "allowed_photos_lost", "passed")
        return (
            asdict(self)
            | {key: round(getattr(self, key), 6) for key in figures}
            | {key: getattr(self, key) for key in counts}
        )

    def refusal(self) -> str:
        """Why int8 was refused, in photos, for the stage's one-line warning."""
        return (
            f"int8 changes the class of {self.disagreements} of {self.images} validation photos "
            f"(allowed {self.allowed_disagreements}) and loses {self.photos_lost} correct ones "
            f"(allowed {self.allowed_photos_lost})"
        )


def photo_bar(images: int, rate: float, tolerated: int) -> int:
    """The most photos a bar of `rate` allows on `images` photos, never fewer than `tolerated`.

    With no failure among n photos, the one-sided 95% bound on a rate is still about 3/n (the
    rule of three), so a split cannot tell a rate below that from zero: on the mini archive's 100
    validation photos 0.5% would mean 0 photos, perfection. Counting whole photos also keeps float
    rounding out of the verdict (on 2,000 photos 0.2% is exactly 4 photos).
    """
    return max(math.floor(images * rate + 1e-9), tolerated)


def quantize(fp32: Path, dest: Path, calibration: Sequence[bytes], spec: PreprocessSpec) -> None:
    """Write the int8 QDQ model for `fp32` to `dest` (no metadata yet)."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(fp32, prepared)  # shape inference + constant folding make quantization exact
        softmax = [node.name for node in onnx.load(prepared).graph.node if node.op_type == "Softmax"]
        quantize_static(
            prepared,
            dest,
            ImageBatches(calibration, spec),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=softmax,
        )


def guard(
    fp32: OnnxModel, int8: OnnxModel, images: Sequence[bytes], labels: np.ndarray, cfg: QuantizeParams
) -> GuardReport:
    spec = fp32.metadata.preprocessing
    fp32_pred, int8_pred = [], []
    for start in tqdm(range(0, len(images), BATCH), desc="quantize guard", unit="batch"):
        batch = np.concatenate([preprocess(data, spec) for data in images[start : start + BATCH]])
        fp32_pred.append(fp32.predict(batch).argmax(1))
        int8_pred.append(int8.predict(batch).argmax(1))
    return judge(np.concatenate(fp32_pred), np.concatenate(int8_pred), labels, cfg)


def judge(fp32_pred: np.ndarray, int8_pred: np.ndarray, labels: np.ndarray, cfg: QuantizeParams) -> GuardReport:
    """The guard's verdict on both files' top-1 classes for the same labelled photos."""
    return GuardReport(
        images=len(labels),
        disagreements=int((fp32_pred != int8_pred).sum()),
        fp32_correct=int((fp32_pred == labels).sum()),
        int8_correct=int((int8_pred == labels).sum()),
        min_agreement=cfg.min_agreement,
        max_accuracy_drop=cfg.max_accuracy_drop,
        tolerated_photos=cfg.tolerated_photos,
    )


def stamp(path: Path, metadata: ModelMetadata) -> None:
    """Write `metadata` into the file, versioned by a content hash of the int8 graph as export does for fp32."""
    proto = onnx.load(path)
    del proto.metadata_props[:]
    version = hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()[:12]
    for key, value in replace(metadata, model_version=version).to_props().items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, path)


def run(
    cfg: QuantizeParams,
    fp32_path: Path,
    served: Path,
    report_path: Path,
    calibration: Sequence[bytes],
    validation: Sequence[LabelledImage],
) -> dict[str, object]:
    """Write the served model (int8 if the guard holds, else fp32) and the report; returns the report."""
    tuning = SessionTuning(intra_op_threads=2)
    fp32 = load_model(fp32_path, tuning)
    report: dict[str, object] = {"enabled": cfg.enabled, "fp32_model_version": fp32.metadata.model_version}
    if not cfg.enabled:
        shutil.copyfile(fp32_path, served)
        report |= {"served": "fp32", "bytes": served.stat().st_size}
    else:
        spec = fp32.metadata.preprocessing
        labels = np.array([fp32.classes.index(image.label) for image in validation])
        with tempfile.TemporaryDirectory(dir=served.parent) as tmp:
            candidate = Path(tmp) / served.name
            quantize(fp32_path, candidate, calibration, spec)
            int8 = load_model(candidate, tuning)  # the service's own checks, softmax row sums included
            result = guard(fp32, int8, [image.data for image in validation], labels, cfg)
            quantization = {"format": "int8-qdq-per-channel", "calibration_images": len(calibration)}
            quantization |= {key: result.as_dict()[key] for key in ("agreement", "fp32_accuracy", "int8_accuracy")}
            if result.passed:
                stamp(candidate, replace(fp32.metadata, quantization=quantization))
                candidate.replace(served)
            else:
                shutil.copyfile(fp32_path, served)
        report |= {"guard": result.as_dict(), "served": "int8" if result.passed else "fp32"}
        report |= {"refusal": None if result.passed else result.refusal()}
        report |= {"bytes": served.stat().st_size, "fp32_bytes": fp32_path.stat().st_size}
    report["model_version"] = load_model(served, tuning).metadata.model_version
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def track(report: dict[str, object], cfg: QuantizeParams, report_path: Path) -> None:
    """Add the quantize params, the guard's figures and which file is served to the model's MLflow run."""
    with reopened_run(train_run_id(), "quantize") as tracker:
        tracker.log_params({f"quantize.{key}": value for key, value in asdict(cfg).items()})
        guard_report = report.get("guard")
        if isinstance(guard_report, dict):
            figures = ("agreement", "fp32_accuracy", "int8_accuracy", "accuracy_drop", "passed")
            tracker.log_metrics({f"quantize_{key}": float(guard_report[key]) for key in figures})
            tracker.set_tags({"quantize_guard": "passed" if guard_report["passed"] else "refused"})
        tracker.set_tags({"served_format": report["served"]})
        if report.get("refusal"):
            tracker.set_tags({"quantize_refusal": report["refusal"]})
        tracker.log_artifact(report_path)


def verdict(report: dict[str, Any], served: Path) -> tuple[int, str]:
    """The stage's last line: which file is served, and a warning naming the fix when int8 was refused."""
    size = f"{served} ({report['served']}, {report['bytes'] / 2**20:.1f} MiB)"
    if not report.get("refusal"):
        return logging.INFO, f"serving {size}"
    return logging.WARNING, (
        f"quantize guard refused int8: {report['refusal']}. Serving the fp32 file {size}; params.yaml "
        "release.formats decides whether it may be the bundled model. For int8, calibrate on more training "
        "images (quantize.calibration_images); quantize.enabled: false ships fp32 without trying."
    )


def arguments() -> argparse.ArgumentParser:
    parser = stage_parser("export.quantize", __doc__)
    parser.add_argument("fp32_model", type=Path, help="the fp32 ONNX file export wrote")
    parser.add_argument("images_zip", type=Path, help="the kept images ingest wrote")
    parser.add_argument("split_csv", type=Path, help="the split assignment split wrote")
    parser.add_argument("served_model", type=Path, help="ONNX file to write: the one the service loads")
    parser.add_argument("report", type=Path, help="JSON to write: the guard's figures and which file is served")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments().parse_args(argv)
    # onnxruntime's quantizer logs every rescaled weight at INFO on the root logger.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    cfg = load_params().quantize
    data = {"images_zip": args.images_zip, "split_csv": args.split_csv}
    calibration = [image.data for image in split_images("train", cfg.calibration_images, **data)] if cfg.enabled else []
    report = run(cfg, args.fp32_model, args.served_model, args.report, calibration, split_images("val", **data))
    track(report, cfg, args.report)
    log.log(*verdict(report, args.served_model))


if __name__ == "__main__":
    with failure_marks_run("quantize"):
        run_stage(main)
