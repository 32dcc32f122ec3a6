"""Stage: the fp32 ONNX file -> the served model, int8 behind a guard.

    python -m export.quantize FP32_MODEL IMAGES_ZIP SPLIT_CSV SERVED_MODEL REPORT   (dvc.yaml passes the paths)

onnxruntime static quantization: QDQ format, per-channel int8 weights, uint8 activations
calibrated on training images that went through the one preprocessing contract. The
softmax stays float, so each output row still sums to 1 (the service checks that).

The guard runs both files on the whole validation split through the service's own
loader. int8 must agree with fp32 on at least `min_agreement` of the images and lose at
most `max_accuracy_drop` of accuracy. If it does not, the fp32 file (already proven by
the parity gate) becomes the served one and the stage exits non-zero so that somebody
looks; `quantize.enabled: false` ships fp32 on purpose.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

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
from training.tracking import reopened_run, train_run_id

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
    images: int
    agreement: float
    fp32_accuracy: float
    int8_accuracy: float
    min_agreement: float
    max_accuracy_drop: float

    @property
    def accuracy_drop(self) -> float:
        return self.fp32_accuracy - self.int8_accuracy

    @property
    def passed(self) -> bool:
        return self.images > 0 and self.agreement >= self.min_agreement and self.accuracy_drop <= self.max_accuracy_drop

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {"accuracy_drop": round(self.accuracy_drop, 6), "passed": self.passed}


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
    a, b = np.concatenate(fp32_pred), np.concatenate(int8_pred)
    return GuardReport(
        images=len(labels),
        agreement=float((a == b).mean()),
        fp32_accuracy=float((a == labels).mean()),
        int8_accuracy=float((b == labels).mean()),
        min_agreement=cfg.min_agreement,
        max_accuracy_drop=cfg.max_accuracy_drop,
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
        tracker.set_tags({"served_format": report["served"]})
        tracker.log_artifact(report_path)


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
    guard_report = report.get("guard")
    if isinstance(guard_report, dict) and not guard_report["passed"]:
        log.error(
            "quantize guard FAILED: int8 agrees with fp32 on %.2f%% of validation images (need %.2f%%), "
            "accuracy drop %.2f points (allowed %.2f). Serving the fp32 model %s. Calibrate on more training "
            "images (quantize.calibration_images), or set quantize.enabled: false to ship fp32 on purpose.",
            100 * guard_report["agreement"],
            100 * guard_report["min_agreement"],
            100 * guard_report["accuracy_drop"],
            100 * guard_report["max_accuracy_drop"],
            args.served_model,
        )
        sys.exit(1)
    log.info("serving %s (%s, %d bytes)", args.served_model, report["served"], report["bytes"])


if __name__ == "__main__":
    run_stage(main)
