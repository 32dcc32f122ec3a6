"""Train the net `model.arch` names from the prepared uint8 caches. `python -m training.train`

One readable loop: batched augmentation -> the shared normalize() -> model,
one-cycle schedule with per-group learning rates (fresh head vs ImageNet
backbone), label smoothing, an exponential moving average of the weights,
validation through the exact serving preprocessing, best-by-val-accuracy
checkpoint, resumable after interruption. Uses CUDA with bf16 autocast when
present; the same code runs on the CPU.

Data-parallel: `torchrun --nproc-per-node=N -m training.train`, or set
`train.processes: N` and this module launches torchrun itself. Each process
takes batch_size / N images of every global batch (training/distributed.py);
rank 0 alone writes files and the MLflow run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from service.preprocessing import PreprocessSpec, normalize
from training import distributed, efficientnet_lite
from training.augment import augment
from training.distributed import ONE_PROCESS, World
from training.model import build_model, model_from_checkpoint, parameter_groups, pretrained_parameters
from training.params import Params, load_params
from training.prepare import PREPARED_DIR, load_split
from training.tracking import Tracker, tracked_run

BEST_MODEL = Path("models/best_model.pth")
CHECKPOINT = Path("models/checkpoint.pth")
HISTORY = Path("reports/train_history.csv")
TRAIN_METRICS = Path("reports/train.json")
EVAL_BATCH = 256

log = logging.getLogger("training.train")


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is visible; set train.device: auto")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def to_input(images: np.ndarray | torch.Tensor, spec: PreprocessSpec, device: torch.device) -> torch.Tensor:
    """uint8 NHWC -> model input, through the one normalize() the service uses."""
    array = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    batch = torch.from_numpy(normalize(array, spec)).to(device, non_blocking=True)
    return batch.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def evaluate_cached(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    spec: PreprocessSpec,
    device: torch.device,
    world: World = ONE_PROCESS,
) -> tuple[float, float]:
    """(loss, accuracy) on a prepared split; each rank scores every world.size-th image."""
    model.eval()
    total_loss, correct = 0.0, 0
    rows = np.arange(world.rank, len(labels), world.size)
    for start in range(0, len(rows), EVAL_BATCH):
        chunk = rows[start : start + EVAL_BATCH]
        x = to_input(images[chunk], spec, device)
        y = torch.from_numpy(labels[chunk]).to(device)
        with autocast(device):
            logits = model(x).float()
        total_loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    total_loss, correct, count = distributed.sum_across([total_loss, correct, len(rows)], world, device)
    return total_loss / count, correct / count


def weight_average(model: nn.Module, decay: float) -> AveragedModel:
    """EMA of weights and BatchNorm statistics, warmed up so the fresh head's random start fades fast."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], steps: torch.Tensor) -> None:
        n = steps.item()
        rate = 1 - min(decay, (1 + n) / (10 + n))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, rate)
        else:  # BatchNorm's integer batch counters
            for mine, theirs in zip(averaged, current, strict=True):
                mine.copy_(theirs)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def autocast(device: torch.device) -> torch.autocast:
    """bf16 mixed precision on CUDA (no loss scaling needed); a no-op on the CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def check_normalisation(params: Params) -> None:
    """Pretrained weights only work on inputs normalised the way they were trained."""
    spec = params.preprocess
    if params.model.arch == "efficientnet_lite0" and params.model.pretrained:
        expected = (efficientnet_lite.MEAN, efficientnet_lite.STD)
        if not np.allclose((spec.mean, spec.std), expected, atol=1e-4):
            raise ValueError(
                f"preprocess mean/std {spec.mean}/{spec.std} do not match the EfficientNet-Lite0 ImageNet weights; "
                f"set preprocess.mean to {[round(v, 6) for v in expected[0]]} "
                f"and preprocess.std to {[round(v, 6) for v in expected[1]]}"
            )


def run_fingerprint(params: Params, data_version: str) -> str:
    """Identifies the run a checkpoint belongs to, so resume never mixes configurations."""
    relevant = {
        "model": asdict(params.model),
        "train": asdict(params.train),
        "preprocess": asdict(params.preprocess),
        "classes": params.data.classes,
        "data_version": data_version,
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=list).encode()).hexdigest()[:16]


def write_history(history: list[dict[str, float]]) -> None:
    HISTORY.parent.mkdir(parents=True, exist_ok=True)
    with HISTORY.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def save_checkpoint(state: dict[str, object], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


@record
def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    cfg = params.train
    check_normalisation(params)
    world = distributed.current_world()
    if cfg.processes > 1 and not world.distributed:
        sys.exit(distributed.launch(cfg.processes))
    device = pick_device(cfg.device, world.local_rank)
    if device.type == "cpu":
        # Processes on one machine share its cores.
        torch.set_num_threads(max(1, cfg.threads // world.local_size))
    else:
        torch.cuda.set_device(device)
    distributed.start(world, device, cfg.collective_timeout_s)
    try:
        fit(params, world, device)
    finally:
        distributed.stop(world)


def fit(params: Params, world: World, device: torch.device) -> None:
    cfg, spec = params.train, params.preprocess
    torch.manual_seed(cfg.seed)

    train_x, train_y = load_split(PREPARED_DIR, "train")
    val_x, val_y = load_split(PREPARED_DIR, "val")
    if cfg.max_train_images is not None:
        train_x, train_y = train_x[: cfg.max_train_images], train_y[: cfg.max_train_images]
    # In memory: batches gather random rows, which a memory map would turn into disk seeks.
    train_x_t = torch.from_numpy(np.array(train_x))
    train_y_t = torch.from_numpy(np.array(train_y))
    data_version = json.loads(Path("reports/data.json").read_text())["data_version"]

    arch = params.model
    model = build_model(
        len(params.data.classes),
        arch.width,
        arch.dropout,
        arch=arch.arch,
        pretrained=arch.pretrained,
        frozen_blocks=arch.frozen_blocks,
    )
    model = model.to(device, memory_format=torch.channels_last)
    average = weight_average(model, cfg.ema_decay) if cfg.ema_decay is not None else None
    groups = parameter_groups(model, arch.pretrained, cfg.lr, cfg.backbone_lr)
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    # Pretrained layers that may learn; during head_only_epochs they wait for the new head to settle.
    trainable_backbone = [p for p in pretrained_parameters(model) if p.requires_grad] if arch.pretrained else []
    steps_per_epoch = len(distributed.shard_batches(torch.arange(len(train_y)), cfg.batch_size, 0, world.size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in groups],
        epochs=cfg.epochs,
        steps_per_epoch=steps_per_epoch,
        pct_start=0.25,
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    fingerprint = run_fingerprint(params, data_version)
    start_epoch, best_acc, history = 0, -1.0, []
    if CHECKPOINT.exists():
        state = torch.load(CHECKPOINT, map_location=device, weights_only=False)
        if state["fingerprint"] == fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if average is not None:
                average.load_state_dict(state["average"])
            start_epoch, best_acc, history = state["epoch"], state["best_acc"], state["history"]
            log.info("resuming from %s at epoch %d", CHECKPOINT, start_epoch + 1)
        else:
            log.info("ignoring %s: it belongs to different params or data", CHECKPOINT)
    # Built after loading so every rank starts from the same weights; unused parameters only
    # occur while head_only_epochs keeps the backbone still.
    replicated = (
        DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.head_only_epochs > start_epoch,
        )
        if world.distributed
        else model
    )
    # The weights that are validated and shipped: the moving average when there is one.
    shipped = average.module if average is not None else model

    run = tracked_run(params.mlflow.experiment, run_name=f"train-{fingerprint}") if world.is_main else None
    with run if run is not None else nullcontext(Tracker(None)) as tracker:
        tracker.log_params(
            {
                f"{section}.{key}": value
                for section in ("model", "train")
                for key, value in asdict(getattr(params, section)).items()
            }
            | {
                "preprocess.image_size": spec.image_size,
                "preprocess.mean": list(spec.mean),
                "preprocess.std": list(spec.std),
                "data_version": data_version,
                "device": device.type,
            }
        )
        train_seconds = sum(row["seconds"] for row in history)
        for epoch in range(start_epoch, cfg.epochs):
            replicated.train()
            for parameter in trainable_backbone:
                parameter.requires_grad_(epoch >= cfg.head_only_epochs)
            started = time.perf_counter()
            order = distributed.epoch_order(len(train_y), cfg.seed, epoch)
            batches = distributed.shard_batches(order, cfg.batch_size, world.rank, world.size)
            generator = distributed.augmentation_generator(cfg.seed, epoch, world.rank)
            seen, loss_sum, correct = 0, 0.0, 0
            bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not world.is_main)
            for batch_idx in bar:
                crops = augment(train_x_t[batch_idx], cfg.scale_min, cfg.jitter, generator, cfg.crop_size)
                x = to_input(crops, spec, device)
                y = train_y_t[batch_idx].to(device, non_blocking=True)
                with autocast(device):
                    logits = replicated(x).float()
                loss = loss_fn(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                if average is not None:
                    average.update_parameters(model)
                seen += len(y)
                loss_sum += loss.item() * len(y)
                correct += (logits.argmax(1) == y).sum().item()
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
            epoch_seconds = time.perf_counter() - started
            train_seconds += epoch_seconds
            loss_sum, correct, seen = distributed.sum_across([loss_sum, correct, seen], world, device)
            distributed.share_from_main(shipped, world)
            val_loss, val_acc = evaluate_cached(shipped, val_x, val_y, spec, device, world)
            row = {
                "epoch": epoch + 1,
                "train_loss": round(loss_sum / seen, 5),
                "train_accuracy": round(correct / seen, 5),
                "val_loss": round(val_loss, 5),
                "val_accuracy": round(val_acc, 5),
                "lr": scheduler.get_last_lr()[0],
                "seconds": round(epoch_seconds, 2),
                "images_per_second": round(seen / epoch_seconds, 1),
            }
            history.append(row)
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
            improved = val_acc > best_acc
            best_acc = max(best_acc, val_acc)
            if not world.is_main:
                continue
            log.info(json.dumps(row))
            if improved:
                save_checkpoint(
                    {
                        "state_dict": shipped.state_dict(),
                        "classes": list(params.data.classes),
                        "model": asdict(params.model),
                        "preprocessing": spec.to_json(),
                        "epoch": epoch + 1,
                        "val_accuracy": val_acc,
                        "data_version": data_version,
                    },
                    BEST_MODEL,
                )
            save_checkpoint(
                {
                    "fingerprint": fingerprint,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "average": average.state_dict() if average is not None else None,
                    "epoch": epoch + 1,
                    "best_acc": best_acc,
                    "history": history,
                },
                CHECKPOINT,
            )
        if not world.is_main:
            return

        write_history(history)
        best = max(history, key=lambda r: r["val_accuracy"])
        summary = {
            "best_val_accuracy": best["val_accuracy"],
            "best_epoch": best["epoch"],
            "epochs": cfg.epochs,
            "train_images": len(train_y),
            "train_seconds": round(train_seconds, 1),
            "images_per_second": round(sum(r["images_per_second"] for r in history) / len(history), 1),
            "device": device.type,
            "processes": world.size,
            "mlflow_run_id": tracker.run_id,
        }
        TRAIN_METRICS.write_text(json.dumps(summary, indent=2) + "\n")
        tracker.log_metrics({"best_val_accuracy": best["val_accuracy"]}, step=cfg.epochs)
        for artifact in (HISTORY, TRAIN_METRICS, BEST_MODEL):
            tracker.log_artifact(artifact)
        best_model = model_from_checkpoint(torch.load(BEST_MODEL, weights_only=True))
        example = normalize(val_x[:1], spec)
        tracker.log_torch_model(best_model.eval(), example, [f"torch=={torch.__version__.split('+')[0]}"])
    CHECKPOINT.unlink(missing_ok=True)
    log.info("best val accuracy %.4f at epoch %d -> %s", best["val_accuracy"], best["epoch"], BEST_MODEL)


if __name__ == "__main__":
    main()
