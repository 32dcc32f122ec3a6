"""Train the net `model.arch` names from the prepared uint8 caches.

    python -m training.train PREPARED DATA_REPORT SOFT_LABELS BEST_MODEL METRICS HISTORY
    (dvc.yaml passes the paths)

One readable loop: uint8 batches on the device -> batched augmentation and the
service's normalisation there -> model,
one-cycle schedule with per-group learning rates (fresh head vs ImageNet
backbone), label smoothing, an exponential moving average of the weights,
validation through the exact serving preprocessing, best-by-val-accuracy
checkpoint, resumable after interruption. With `train.distill_weight` > 0 the
loss also learns from the teacher's out-of-fold probabilities (training/distill.py),
`train.drop_flagged` leaves out the photos the label-noise audit flagged, and
`train.mixup_alpha` > 0 mixes each batch with itself (training/mixup.py);
SOFT_LABELS, the audit stage's output, is read only for these. Uses CUDA with bf16 autocast when
present; the same code runs on the CPU. On a GPU the uint8 caches live in its
memory when they fit (training/batches.py), and the loop never waits on the
device between steps, so the host queues step k+1 while the GPU runs step k.

Data-parallel: `torchrun --nproc-per-node=N -m training.train PATHS...`, or set
`train.processes: N` and this module launches torchrun itself. Each process
takes batch_size / N images of every global batch (training/distributed.py);
rank 0 alone writes files and the MLflow run.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from service.preprocessing import PreprocessSpec, normalize
from training import batches, distributed, efficientnet_lite
from training.atomic import atomic_path
from training.augment import augment
from training.average import WeightAverage
from training.cli import run_stage, stage_parser
from training.distill import Objective, load_soft_labels
from training.distributed import ONE_PROCESS, World
from training.errors import MissingInputError, ParamsError
from training.mixup import mix, mixing_share
from training.model import build_model, model_from_checkpoint, parameter_groups, pretrained_parameters
from training.params import Params, TrainParams, load_params
from training.prepare import load_split
from training.tracking import Tracker, tracked_run

EVAL_BATCH = 256
# Seconds between progress-bar figures: reading them makes the host wait for the device.
PROGRESS_EVERY_S = 2.0

log = logging.getLogger("training.train")


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ParamsError("train.device is 'cuda' but no CUDA device is visible; set train.device: auto")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


@torch.no_grad()
def evaluate_cached(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    spec: PreprocessSpec,
    device: torch.device,
    world: World = ONE_PROCESS,
) -> tuple[float, float]:
    """(loss, accuracy) on a prepared split (uint8 images, placed by batches.place); each rank scores every
    world.size-th image."""
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    rows = torch.arange(world.rank, len(labels), world.size)
    for x, y in batches.device_batches(images, labels, rows.split(EVAL_BATCH), device):
        with autocast(device):
            logits = model(batches.normalize(x, spec)).float()
        total_loss += nn.functional.cross_entropy(logits, y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
    summed = distributed.sum_across([total_loss.item(), correct.item(), len(rows)], world, device)
    total, right, count = summed
    return total / count, right / count


def autocast(device: torch.device) -> torch.autocast:
    """bf16 mixed precision on CUDA (no loss scaling needed); a no-op on the CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def check_normalisation(params: Params) -> None:
    """Pretrained weights only work on inputs normalised the way they were trained."""
    spec = params.preprocess
    if params.model.arch == "efficientnet_lite0" and params.model.pretrained:
        expected = (efficientnet_lite.MEAN, efficientnet_lite.STD)
        if not np.allclose((spec.mean, spec.std), expected, atol=1e-4):
            raise ParamsError(
                f"preprocess mean/std {spec.mean}/{spec.std} do not match the EfficientNet-Lite0 ImageNet weights; "
                f"set preprocess.mean to {[round(v, 6) for v in expected[0]]} "
                f"and preprocess.std to {[round(v, 6) for v in expected[1]]}"
            )


def run_fingerprint(params: Params, data_version: str, soft_labels_version: str | None = None) -> str:
    """Identifies the run a checkpoint belongs to, so resume never mixes configurations (nor audits)."""
    relevant = {
        "model": asdict(params.model),
        "train": asdict(params.train),
        "preprocess": asdict(params.preprocess),
        "classes": params.data.classes,
        "data_version": data_version,
    } | ({"soft_labels_version": soft_labels_version} if soft_labels_version is not None else {})
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=list).encode()).hexdigest()[:16]


def write_history(history: list[dict[str, float]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def save_checkpoint(state: dict[str, object], path: Path) -> None:
    """Written beside `path`, then renamed: a run killed mid-write keeps the previous checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def arguments() -> argparse.ArgumentParser:
    parser = stage_parser("training.train", __doc__)
    parser.add_argument("prepared", type=Path, help="the uint8 caches prepare wrote")
    parser.add_argument("data_report", type=Path, help="ingest's report, for the data_version")
    parser.add_argument("soft_labels", type=Path, help="the audit's teacher probabilities and flags (read when used)")
    parser.add_argument("best_model", type=Path, help="weights-only checkpoint to write; resume state goes beside it")
    parser.add_argument("metrics", type=Path, help="JSON summary to write")
    parser.add_argument("history", type=Path, help="CSV to write: one row per epoch")
    return parser


@record
def main(argv: Sequence[str] | None = None) -> None:
    args = arguments().parse_args(argv)
    paths = TrainPaths(args.prepared, args.data_report, args.soft_labels, args.best_model, args.metrics, args.history)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    cfg = params.train
    check_normalisation(params)
    world = distributed.current_world()
    if cfg.processes > 1 and not world.distributed:
        forwarded = sys.argv[1:] if argv is None else argv
        sys.exit(distributed.launch(cfg.processes, "training.train", forwarded, paths.checkpoint))
    device = pick_device(cfg.device, world.local_rank)
    if device.type == "cpu":
        # Processes on one machine share its cores.
        torch.set_num_threads(max(1, cfg.threads // world.local_size))
    else:
        torch.cuda.set_device(device)
    distributed.start(world, device, cfg.collective_timeout_s)
    try:
        fit(params, world, device, paths)
    finally:
        distributed.stop(world)


@dataclass(frozen=True)
class TrainPaths:
    """Where the stage reads and writes; the resume checkpoint lives beside the best model."""

    prepared: Path
    data_report: Path
    soft_labels: Path
    best_model: Path
    metrics: Path
    history: Path

    @property
    def checkpoint(self) -> Path:
        return self.best_model.with_name("checkpoint.pth")


@dataclass(frozen=True)
class TrainData:
    """The train and validation splits in memory, where batches are cut from them (batches.place: on the
    GPU when they fit), and the version of the data they came from. Not memory-mapped: batches gather
    random rows, which a memory map would turn into disk seeks."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    version: str
    teacher: torch.Tensor | None = None  # (N, C) out-of-fold teacher probabilities, when distilling
    soft_labels_version: str | None = None  # content hash of the audit's file, when the run reads it


@dataclass
class Learner:
    """The model and everything that steps with it."""

    model: nn.Module
    average: WeightAverage | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: Objective
    # Pretrained layers that may learn; during head_only_epochs they wait for the new head to settle.
    trainable_backbone: list[nn.Parameter]

    @property
    def shipped(self) -> nn.Module:
        """The weights that are validated and shipped: the moving average when there is one."""
        return self.average.module if self.average is not None else self.model


@dataclass
class Progress:
    """What a resumed run carries over: epochs done, the best validation accuracy, one row per epoch."""

    epochs_done: int = 0
    best_acc: float = -1.0
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0

    def record(self, row: dict[str, float], val_acc: float, seconds: float) -> bool:
        """Adds an epoch; True when its validation accuracy beats every earlier epoch's."""
        self.history.append(row)
        self.epochs_done = int(row["epoch"])
        self.train_seconds += seconds
        improved = val_acc > self.best_acc
        self.best_acc = max(self.best_acc, val_acc)
        return improved


@dataclass(frozen=True)
class Batch:
    """One training step's input and targets, on the device."""

    x: torch.Tensor
    y: torch.Tensor
    teacher: torch.Tensor | None = None  # the teacher's probabilities for these rows, when distilling
    partner: torch.Tensor | None = None  # mixup: the row each image was mixed with
    share: float = 1.0  # mixup: each image's own weight in its mix

    def loss(self, objective: Objective, logits: torch.Tensor) -> torch.Tensor:
        own = objective(logits, self.y, self.teacher)
        if self.partner is None:
            return own
        teacher = self.teacher[self.partner] if self.teacher is not None else None
        return self.share * own + (1 - self.share) * objective(logits, self.y[self.partner], teacher)


@dataclass(frozen=True)
class EpochStats:
    """One epoch's training figures, summed over every process."""

    loss_sum: float
    correct: int
    seen: int
    seconds: float


def load_data(params: Params, paths: TrainPaths, device: torch.device) -> TrainData:
    cfg = params.train
    train_x, train_y = load_split(paths.prepared, "train")
    val_x, val_y = load_split(paths.prepared, "val")
    teacher, soft_labels_version = None, None
    if cfg.drop_flagged or objective(cfg).needs_teacher:
        soft = load_soft_labels(paths.soft_labels, params.data.classes, np.asarray(train_y))
        soft_labels_version = hashlib.sha256(paths.soft_labels.read_bytes()).hexdigest()[:16]
        keep = ~soft.flagged if cfg.drop_flagged else np.ones(len(train_y), dtype=bool)
        log.info("training on %d of %d photos (%d flagged by the audit)", keep.sum(), len(keep), soft.flagged.sum())
        train_x, train_y, teacher = train_x[keep], train_y[keep], soft.probabilities[keep]
    if cfg.max_train_images is not None:
        train_x, train_y = train_x[: cfg.max_train_images], train_y[: cfg.max_train_images]
        teacher = teacher[: cfg.max_train_images] if teacher is not None else None
    if not paths.data_report.is_file():
        raise MissingInputError(f"{paths.data_report} is missing; run `dvc repro ingest` first")
    version = json.loads(paths.data_report.read_text())["data_version"]
    train = batches.place(torch.from_numpy(np.array(train_x)), torch.from_numpy(np.array(train_y)), device)
    val = batches.place(torch.from_numpy(np.array(val_x)), torch.from_numpy(np.array(val_y)), device)
    placed_teacher = torch.from_numpy(teacher).to(device) if objective(cfg).needs_teacher else None
    return TrainData(*train, *val, version, placed_teacher, soft_labels_version)


def objective(cfg: TrainParams) -> Objective:
    return Objective(cfg.label_smoothing, cfg.distill_weight, cfg.distill_temperature)


def build_learner(params: Params, train_count: int, world: World, device: torch.device) -> Learner:
    arch, cfg = params.model, params.train
    model = build_model(
        len(params.data.classes),
        arch.width,
        arch.dropout,
        arch=arch.arch,
        pretrained=arch.pretrained,
        frozen_blocks=arch.frozen_blocks,
    )
    model = model.to(device, memory_format=torch.channels_last)
    average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay is not None else None
    groups = parameter_groups(model, arch.pretrained, cfg.lr, cfg.backbone_lr)
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    trainable_backbone = [p for p in pretrained_parameters(model) if p.requires_grad] if arch.pretrained else []
    steps_per_epoch = len(distributed.shard_batches(torch.arange(train_count), cfg.batch_size, 0, world.size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in groups],
        epochs=cfg.epochs,
        steps_per_epoch=steps_per_epoch,
        pct_start=0.25,
    )
    return Learner(model, average, optimizer, scheduler, objective(cfg), trainable_backbone)


def resume(learner: Learner, fingerprint: str, checkpoint: Path, device: torch.device) -> Progress:
    """Loads the interrupted run's state into `learner` when the checkpoint is this run's."""
    if not checkpoint.exists():
        return Progress()
    state = torch.load(checkpoint, map_location=device, weights_only=False)
    if state["fingerprint"] != fingerprint:
        log.info("ignoring %s: it belongs to different params or data", checkpoint)
        return Progress()
    learner.model.load_state_dict(state["model"])
    learner.optimizer.load_state_dict(state["optimizer"])
    learner.scheduler.load_state_dict(state["scheduler"])
    if learner.average is not None:
        learner.average.load_state_dict(state["average"])
    log.info("resuming from %s at epoch %d", checkpoint, state["epoch"] + 1)
    history = state["history"]
    return Progress(state["epoch"], state["best_acc"], history, sum(row["seconds"] for row in history))


def replicate(model: nn.Module, world: World, device: torch.device, backbone_still: bool) -> nn.Module:
    """The module the steps run through: DDP across processes, else the model itself.

    Built after resuming so every rank starts from the same weights; unused parameters only
    occur while head_only_epochs keeps the backbone still.
    """
    if not world.distributed:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=backbone_still)


def logged_params(params: Params, data_version: str, device: torch.device) -> dict[str, object]:
    spec = params.preprocess
    return {
        f"{section}.{key}": value
        for section in ("model", "train")
        for key, value in asdict(getattr(params, section)).items()
    } | {
        "preprocess.image_size": spec.image_size,
        "preprocess.mean": list(spec.mean),
        "preprocess.std": list(spec.std),
        "data_version": data_version,
        "device": device.type,
    }


def fit(params: Params, world: World, device: torch.device, paths: TrainPaths) -> None:
    cfg = params.train
    torch.manual_seed(cfg.seed)
    data = load_data(params, paths, device)
    learner = build_learner(params, len(data.train_y), world, device)
    fingerprint = run_fingerprint(params, data.version, data.soft_labels_version)
    progress = resume(learner, fingerprint, paths.checkpoint, device)
    replicated = replicate(learner.model, world, device, backbone_still=cfg.head_only_epochs > progress.epochs_done)

    run = tracked_run(params.mlflow.experiment, run_name=f"train-{fingerprint}") if world.is_main else None
    with run if run is not None else nullcontext(Tracker(None)) as tracker:
        tracker.log_params(logged_params(params, data.version, device))
        for epoch in range(progress.epochs_done, cfg.epochs):
            stats = train_epoch(replicated, learner, data, params, epoch, world, device)
            val_loss, val_acc = validate(learner, data, params.preprocess, world, device)
            row = epoch_row(epoch, stats, val_loss, val_acc, learner.scheduler.get_last_lr()[0])
            improved = progress.record(row, val_acc, stats.seconds)
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
            if world.is_main:
                log.info(json.dumps(row))
                save_checkpoints(learner, progress, params, fingerprint, data.version, paths, improved)
        if not world.is_main:
            return
        best = write_reports(progress, len(data.train_y), params, world, device, tracker.run_id, paths)
        log_outputs(tracker, best, params, data.val_x, paths)
    paths.checkpoint.unlink(missing_ok=True)
    log.info("best val accuracy %.4f at epoch %d -> %s", best["val_accuracy"], best["epoch"], paths.best_model)


def train_epoch(
    replicated: nn.Module,
    learner: Learner,
    data: TrainData,
    params: Params,
    epoch: int,
    world: World,
    device: torch.device,
) -> EpochStats:
    """One pass over this rank's shard of the training set."""
    cfg = params.train
    replicated.train()
    for parameter in learner.trainable_backbone:
        parameter.requires_grad_(epoch >= cfg.head_only_epochs)
    started = time.perf_counter()
    order = distributed.epoch_order(len(data.train_y), cfg.seed, epoch)
    rows = distributed.shard_batches(order, cfg.batch_size, world.rank, world.size)
    inputs = training_batches(data, rows, params, epoch, world, device)
    # Summed on the device: reading a figure every step would make the host wait for the GPU.
    seen = 0
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    bar = tqdm(inputs, desc=f"epoch {epoch + 1}/{cfg.epochs}", total=len(rows), unit="batch", disable=not world.is_main)
    shown = started
    for step, batch in enumerate(bar, 1):
        loss, logits = train_step(replicated, learner, batch, device)
        seen += len(batch.y)
        loss_sum += loss.detach().double() * len(batch.y)
        correct += (logits.argmax(1) == batch.y).sum()
        if time.perf_counter() - shown >= PROGRESS_EVERY_S or step == len(rows):
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}")
            shown = time.perf_counter()
    # The clock stops once the device has finished the epoch's work, not when the host has queued it.
    figures = [loss_sum.item(), correct.item(), seen]
    seconds = time.perf_counter() - started
    loss_total, correct_total, seen_total = distributed.sum_across(figures, world, device)
    return EpochStats(loss_total, int(correct_total), int(seen_total), seconds)


def training_batches(
    data: TrainData, rows: list[torch.Tensor], params: Params, epoch: int, world: World, device: torch.device
) -> Iterator[Batch]:
    """The step's Batch for each batch of row indices: the uint8 rows on `device`, augmented, normalised
    and (with mixup) mixed there, with random draws from a generator on that device."""
    cfg = params.train
    generator = distributed.augmentation_generator(cfg.seed, epoch, world.rank, device)
    # The mixing shares come from the host: one scalar per batch, reproducible per (seed, epoch, rank).
    shares = np.random.default_rng([cfg.seed, epoch, world.rank])
    cut = batches.device_batches(data.train_x, data.train_y, rows, device)
    for (images, labels), index in zip(cut, rows, strict=True):
        crops = augment(images, cfg.scale_min, cfg.jitter, generator, cfg.crop_size)
        x = batches.normalize(crops, params.preprocess)
        teacher = data.teacher[index.to(device, non_blocking=True)] if data.teacher is not None else None
        if cfg.mixup_alpha > 0:
            share = mixing_share(cfg.mixup_alpha, shares)
            mixed, partner = mix(x, share, generator)
            yield Batch(mixed, labels, teacher, partner, share)
        else:
            yield Batch(x, labels, teacher)


def train_step(
    replicated: nn.Module, learner: Learner, batch: Batch, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, logits) of one batch, after the optimizer, schedule and weight average have stepped."""
    with autocast(device):
        logits = replicated(batch.x).float()
    loss = batch.loss(learner.loss_fn, logits)
    learner.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    learner.optimizer.step()
    learner.scheduler.step()
    if learner.average is not None:
        learner.average.update_parameters(learner.model)
    return loss, logits


def validate(
    learner: Learner, data: TrainData, spec: PreprocessSpec, world: World, device: torch.device
) -> tuple[float, float]:
    """(loss, accuracy) of the shipped weights on the validation split."""
    distributed.share_from_main(learner.shipped, world)
    return evaluate_cached(learner.shipped, data.val_x, data.val_y, spec, device, world)


def epoch_row(epoch: int, stats: EpochStats, val_loss: float, val_acc: float, lr: float) -> dict[str, float]:
    return {
        "epoch": epoch + 1,
        "train_loss": round(stats.loss_sum / stats.seen, 5),
        "train_accuracy": round(stats.correct / stats.seen, 5),
        "val_loss": round(val_loss, 5),
        "val_accuracy": round(val_acc, 5),
        "lr": lr,
        "seconds": round(stats.seconds, 2),
        "images_per_second": round(stats.seen / stats.seconds, 1),
    }


def save_checkpoints(
    learner: Learner,
    progress: Progress,
    params: Params,
    fingerprint: str,
    data_version: str,
    paths: TrainPaths,
    new_best: bool,
) -> None:
    """The shipped weights when this epoch beat the best so far, and always the state to resume from."""
    if new_best:
        best = {
            "state_dict": learner.shipped.state_dict(),
            "classes": list(params.data.classes),
            "model": asdict(params.model),
            "preprocessing": params.preprocess.to_json(),
            "epoch": progress.epochs_done,
            "val_accuracy": progress.best_acc,
            "data_version": data_version,
        }
        save_checkpoint(best, paths.best_model)
    resumable = {
        "fingerprint": fingerprint,
        "model": learner.model.state_dict(),
        "optimizer": learner.optimizer.state_dict(),
        "scheduler": learner.scheduler.state_dict(),
        "average": learner.average.state_dict() if learner.average is not None else None,
        "epoch": progress.epochs_done,
        "best_acc": progress.best_acc,
        "history": progress.history,
    }
    save_checkpoint(resumable, paths.checkpoint)


def write_reports(
    progress: Progress,
    train_count: int,
    params: Params,
    world: World,
    device: torch.device,
    run_id: str | None,
    paths: TrainPaths,
) -> dict[str, float]:
    """Writes the history and the summary; returns the best epoch's row."""
    history = progress.history
    write_history(history, paths.history)
    best = max(history, key=lambda r: r["val_accuracy"])
    summary = {
        "best_val_accuracy": best["val_accuracy"],
        "best_epoch": best["epoch"],
        "epochs": params.train.epochs,
        "train_images": train_count,
        "train_seconds": round(progress.train_seconds, 1),
        "images_per_second": round(sum(r["images_per_second"] for r in history) / len(history), 1),
        "device": device.type,
        "processes": world.size,
        "mlflow_run_id": run_id,
    }
    paths.metrics.write_text(json.dumps(summary, indent=2) + "\n")
    return best


def log_outputs(
    tracker: Tracker, best: dict[str, float], params: Params, val_x: torch.Tensor, paths: TrainPaths
) -> None:
    tracker.log_metrics({"best_val_accuracy": best["val_accuracy"]}, step=params.train.epochs)
    for artifact in (paths.history, paths.metrics, paths.best_model):
        tracker.log_artifact(artifact)
    best_model = model_from_checkpoint(torch.load(paths.best_model, weights_only=True))
    example = normalize(val_x[:1].cpu().numpy(), params.preprocess)
    tracker.log_torch_model(best_model.eval(), example, [f"torch=={torch.__version__.split('+')[0]}"])


if __name__ == "__main__":
    run_stage(main)
