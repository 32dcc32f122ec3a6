"""Stage: the best checkpoint -> an fp32 ONNX file, gated on parity.

    python -m export.export BEST_MODEL IMAGES_ZIP SPLIT_CSV ONNX_MODEL PARITY_REPORT   (dvc.yaml passes the paths)

With `export.calibrate`, a temperature is first fitted on the whole validation
split (training/calibration.py) and divides the logits inside the graph. The
ONNX file is written to a temporary path, proven equal to the PyTorch model
(the same temperature included) on real validation images, and only then moved
into place. A failed gate leaves the previous model untouched and exits non-zero.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from tqdm import tqdm

from export.parity import check_parity
from service.metadata import INPUT_NAME, OUTPUT_NAME, ModelMetadata
from service.preprocessing import PreprocessSpec, preprocess
from training.calibration import fit_temperature, served_nll
from training.cli import run_stage, stage_parser
from training.dataset import LabelledImage, split_images
from training.errors import ParamsError
from training.model import WithSoftmax, model_from_checkpoint
from training.params import ExportParams, load_params
from training.tracking import failure_marks_run, reopened_run, train_run_id

log = logging.getLogger("export")
BATCH = 64


def load_checkpoint(path: Path) -> tuple[torch.nn.Module, dict]:
    """The trained net (logits out) and the weights-only checkpoint it came from."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return model_from_checkpoint(checkpoint).eval(), checkpoint


def view_logits(net: torch.nn.Module, images: list[LabelledImage], spec: PreprocessSpec, flip_tta: bool) -> np.ndarray:
    """(views, N, C): the logits the exported graph turns into probabilities, one slice per averaged view."""
    views = []
    for start in tqdm(range(0, len(images), BATCH), desc="calibrate", unit="batch"):
        batch = torch.from_numpy(np.concatenate([preprocess(i.data, spec) for i in images[start : start + BATCH]]))
        with torch.no_grad():
            views.append(torch.stack([net(batch), net(batch.flip(3))] if flip_tta else [net(batch)]).numpy())
    return np.concatenate(views, axis=1)


def calibration(net: torch.nn.Module, spec: PreprocessSpec, classes: list[str], flip_tta: bool, **paths: Path) -> dict:
    """The temperature fitted on the whole validation split, with the validation NLL it moves from and to."""
    validation = split_images("val", **paths)
    if not validation:
        raise ParamsError("export.calibrate fits a temperature on the validation split, which is empty")
    logits = view_logits(net, validation, spec, flip_tta)
    labels = np.array([classes.index(image.label) for image in validation])
    temperature = fit_temperature(logits, labels)
    return {
        "temperature": round(temperature, 6),
        "calibration_images": len(validation),
        "val_nll_before": served_nll(logits, labels, 1.0),
        "val_nll_after": served_nll(logits, labels, round(temperature, 6)),
    }


def to_onnx(model: torch.nn.Module, image_size: int, opset: int) -> onnx.ModelProto:
    example = torch.zeros(2, 3, image_size, image_size)
    program = torch.onnx.export(
        model,
        (example,),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset,
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
        verbose=False,
    )
    return without_provenance(program.model_proto)


def without_provenance(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The graph without the exporter's per-node stack traces and doc strings.

    They name the checkout's absolute paths (/home/me/repo/training/model.py, the venv's torch), so
    the same weights exported from two clones hashed to two model versions and two files.
    """
    graphs: list[onnx.GraphProto | onnx.FunctionProto] = [proto.graph, *proto.functions]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
            graphs.extend(attr.g for attr in node.attribute if attr.HasField("g"))
            graphs.extend(sub for attr in node.attribute for sub in attr.graphs)
        if isinstance(graph, onnx.GraphProto):
            for value in (*graph.input, *graph.output, *graph.value_info):
                del value.metadata_props[:]
    proto.doc_string = ""
    return proto


def stamp_metadata(proto: onnx.ModelProto, metadata: ModelMetadata) -> None:
    del proto.metadata_props[:]
    for key, value in metadata.to_props().items():
        proto.metadata_props.add(key=key, value=value)


def export_model(
    best_model: Path,
    dest: Path,
    report_path: Path,
    opset: int,
    parity_images: int,
    atol: float,
    flip_tta: bool,
    *,
    images_zip: Path,
    split_csv: Path,
    calibrate: bool = False,
    image_size: int | None = None,
) -> dict:
    """`image_size` overrides the trained serving size (scripts/sweep_serving.py); the net is fully convolutional."""
    net, checkpoint = load_checkpoint(best_model)
    spec = PreprocessSpec.from_json(checkpoint["preprocessing"])
    if image_size is not None:
        spec = dataclasses.replace(spec, image_size=image_size)
    fitted = (
        calibration(net, spec, list(checkpoint["classes"]), flip_tta, images_zip=images_zip, split_csv=split_csv)
        if calibrate
        else {"temperature": 1.0}
    )
    model = WithSoftmax(net, flip_tta, fitted["temperature"]).eval()
    proto = to_onnx(model, spec.image_size, opset)
    # Content hash of graph + weights, taken before metadata so it names the math, not the labels.
    version = hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()[:12]
    stamp_metadata(
        proto,
        ModelMetadata(
            classes=tuple(checkpoint["classes"]),
            preprocessing=spec,
            model_version=version,
            data_version=checkpoint["data_version"],
            metrics={
                "val_accuracy": checkpoint["val_accuracy"],
                "epoch": checkpoint["epoch"],
                "temperature": fitted["temperature"],
            },
        ),
    )
    onnx.checker.check_model(proto, full_check=True)

    validation = split_images("val", parity_images, images_zip=images_zip, split_csv=split_csv)
    images = [(image.path, image.data) for image in validation]
    if len(images) < parity_images:
        raise ParamsError(
            f"parity needs {parity_images} validation images, found {len(images)}; lower export.parity_images"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        candidate = Path(tmp) / dest.name
        onnx.save(proto, candidate)
        report = check_parity(model, spec, candidate, images, atol).as_dict()
        report |= {"model_version": version, "opset": opset, "flip_tta": flip_tta, "bytes": candidate.stat().st_size}
        report |= fitted
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(report, indent=2) + "\n")
        if report["passed"]:
            os.replace(candidate, dest)
    return report


def track(report: dict, cfg: ExportParams, report_path: Path) -> None:
    """Add the export params and the parity gate's verdict to the model's MLflow run."""
    with reopened_run(train_run_id(), "export") as tracker:
        tracker.log_params({f"export.{key}": value for key, value in dataclasses.asdict(cfg).items()})
        tracker.log_metrics(
            {
                "parity_passed": float(report["passed"]),
                "parity_max_abs_diff": report["max_abs_diff"],
                "parity_class_mismatches": report["class_mismatches"],
                "fp32_mb": report["bytes"] / 2**20,
                "temperature": report["temperature"],
            }
        )
        tracker.log_artifact(report_path)


def arguments() -> argparse.ArgumentParser:
    parser = stage_parser("export.export", __doc__)
    parser.add_argument("best_model", type=Path, help="the weights-only checkpoint train wrote")
    parser.add_argument("images_zip", type=Path, help="the kept images ingest wrote")
    parser.add_argument("split_csv", type=Path, help="the split assignment split wrote")
    parser.add_argument("onnx_model", type=Path, help="fp32 ONNX file to write; the quantize stage reads it")
    parser.add_argument("parity_report", type=Path, help="JSON to write: the parity gate's verdict")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for chatty in ("onnx_ir", "onnxscript"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    cfg = load_params().export
    report = export_model(
        args.best_model,
        args.onnx_model,
        args.parity_report,
        cfg.opset,
        cfg.parity_images,
        cfg.parity_atol,
        cfg.flip_tta,
        images_zip=args.images_zip,
        split_csv=args.split_csv,
        calibrate=cfg.calibrate,
    )
    track(report, cfg, args.parity_report)
    if not report["passed"]:
        log.error(
            "parity gate FAILED: %d class mismatches, max |diff| %.2e > %.0e (worst: %s). %s left unchanged.",
            report["class_mismatches"],
            report["max_abs_diff"],
            report["atol"],
            report["worst_image"],
            args.onnx_model,
        )
        sys.exit(1)
    log.info(
        "parity passed on %d images (max |diff| %.2e); temperature %.4g; wrote %s",
        report["images"],
        report["max_abs_diff"],
        report["temperature"],
        args.onnx_model,
    )


if __name__ == "__main__":
    with failure_marks_run("export"):
        run_stage(main)
