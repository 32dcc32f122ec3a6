"""Typed view of params.yaml: the pipeline's single configuration source."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from service.preprocessing import PreprocessSpec
from training.errors import MissingInputError, ParamsError

T = TypeVar("T")


@dataclass(frozen=True)
class DataParams:
    source: str
    sha256: str | None
    min_side: int
    classes: tuple[str, ...]


@dataclass(frozen=True)
class SplitParams:
    seed: int
    val_fraction: float
    test_fraction: float


@dataclass(frozen=True)
class ModelParams:
    arch: str
    pretrained: bool
    frozen_blocks: int
    width: int
    dropout: float


@dataclass(frozen=True)
class TrainParams:
    epochs: int
    head_only_epochs: int
    batch_size: int
    lr: float
    backbone_lr: float
    weight_decay: float
    label_smoothing: float
    scale_min: float
    crop_size: int | None
    jitter: float
    threads: int
    seed: int
    device: str
    max_train_images: int | None
    ema_decay: float | None
    processes: int
    collective_timeout_s: int
    drop_flagged: bool
    distill_weight: float
    distill_temperature: float
    mixup_alpha: float


@dataclass(frozen=True)
class TeacherParams:
    variant: str
    image_size: int
    flip: bool
    batch_size: int
    threads: int
    folds: int
    l2: float
    seed: int


@dataclass(frozen=True)
class ExportParams:
    opset: int
    flip_tta: bool
    calibrate: bool
    parity_images: int
    parity_atol: float


@dataclass(frozen=True)
class QuantizeParams:
    enabled: bool
    calibration_images: int
    min_agreement: float
    max_accuracy_drop: float
    tolerated_photos: int  # the least either bar allows, in photos: a small split cannot judge 0.5%


@dataclass(frozen=True)
class MlflowParams:
    experiment: str
    registered_model: str
    champion_alias: str


@dataclass(frozen=True)
class ReleaseParams:
    min_accuracy: float
    min_class_accuracy: float
    max_model_mb: float
    max_ece: float  # expected calibration error (15 bins) of the served confidence on the test split
    formats: tuple[str, ...]  # what the served file may be: "int8", "fp32" (models/metrics.json `format`)


@dataclass(frozen=True)
class Params:
    data: DataParams
    split: SplitParams
    preprocess: PreprocessSpec
    model: ModelParams
    train: TrainParams
    teacher: TeacherParams
    export: ExportParams
    quantize: QuantizeParams
    mlflow: MlflowParams
    release: ReleaseParams


def _section(cls: type[T], raw: dict[str, Any], name: str) -> T:
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    section = raw.get(name) or {}
    unknown = set(section) - known
    missing = known - set(section)
    if unknown or missing:
        raise ParamsError(
            f"params.yaml section '{name}': unknown keys {sorted(unknown)}, missing keys {sorted(missing)}"
        )
    values = {key: tuple(v) if isinstance(v, list) else v for key, v in section.items()}
    return cls(**values)


def load_params(path: str | Path = "params.yaml") -> Params:
    if not Path(path).is_file():
        raise MissingInputError(f"{Path(path).resolve()} is missing; run the stage from the repository's root")
    raw = yaml.safe_load(Path(path).read_text())
    return Params(
        data=_section(DataParams, raw, "data"),
        split=_section(SplitParams, raw, "split"),
        preprocess=_section(PreprocessSpec, raw, "preprocess"),
        model=_section(ModelParams, raw, "model"),
        train=_section(TrainParams, raw, "train"),
        teacher=_section(TeacherParams, raw, "teacher"),
        export=_section(ExportParams, raw, "export"),
        quantize=_section(QuantizeParams, raw, "quantize"),
        mlflow=_section(MlflowParams, raw, "mlflow"),
        release=_section(ReleaseParams, raw, "release"),
    )
