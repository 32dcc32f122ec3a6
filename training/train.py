"""Train the net `model.arch` names from the prepared uint8 caches. `python -m training.train`

One readable loop: batched augmentation -> the shared normalize() -> model,
one-cycle schedule with per-group learning rates (fresh head vs ImageNet
backbone), label smoothing, validation through the exact serving
preprocessing, best-by-val-accuracy checkpoint, resumable after interruption.
Uses CUDA with bf16 autocast when present; the same code runs on the CPU.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from service.preprocessing import PreprocessSpec, normalize
from training import efficientnet_lite
from training.augment import augment
from training.model import build_model, model_from_checkpoint, parameter_groups, pretrained_parameters
from training.params import Params, load_params
from training.prepare import PREPARED_DIR, load_split
from training.tracking import tracked_run

BEST_MODEL = Path("models/best_model.pth")
CHECKPOINT = Path("models/checkpoint.pth")
HISTORY = Path("reports/train_history.csv")
TRAIN_METRICS = Path("reports/train.json")
EVAL_BATCH = 256

log = logging.getLogger("training.train")


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is visible; set train.device: auto")
    return torch.device(requested)


def to_input(images: np.ndarray | torch.Tensor, spec: PreprocessSpec, device: torch.device) -> torch.Tensor:
    """uint8 NHWC -> model input, through the one normalize() the service uses."""
    array = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    batch = torch.from_numpy(normalize(array, spec)).to(device, non_blocking=True)
    return batch.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def evaluate_cached(
    model: nn.Module, images: np.ndarray, labels: np.ndarray, spec: PreprocessSpec, device: torch.device
) -> tuple[float, float]:
    """(loss, accuracy) on a prepared split."""
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(labels), EVAL_BATCH):
        x = to_input(images[start : start + EVAL_BATCH], spec, device)
        y = torch.from_numpy(labels[start : start + EVAL_BATCH]).to(device)
        with autocast(device):
            logits = model(x).float()
        total_loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    return total_loss / len(labels), correct / len(labels)


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


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    cfg, spec = params.train, params.preprocess
    check_normalisation(params)
    device = pick_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)

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
    groups = parameter_groups(model, arch.pretrained, cfg.lr, cfg.backbone_lr)
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    # Pretrained layers that may learn; during head_only_epochs they wait for the new head to settle.
    trainable_backbone = [p for p in pretrained_parameters(model) if p.requires_grad] if arch.pretrained else []
    steps_per_epoch = max(1, len(train_y) // cfg.batch_size)
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
            generator.set_state(state["generator"])
            start_epoch, best_acc, history = state["epoch"], state["best_acc"], state["history"]
            log.info("resuming from %s at epoch %d", CHECKPOINT, start_epoch + 1)
        else:
            log.info("ignoring %s: it belongs to different params or data", CHECKPOINT)

    with tracked_run(params.mlflow.experiment, run_name=f"train-{fingerprint}") as tracker:
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
            model.train()
            for parameter in trainable_backbone:
                parameter.requires_grad_(epoch >= cfg.head_only_epochs)
            started = time.perf_counter()
            order = torch.randperm(len(train_y), generator=generator)[: steps_per_epoch * cfg.batch_size]
            seen, loss_sum, correct = 0, 0.0, 0
            bar = tqdm(order.split(cfg.batch_size), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch")
            for batch_idx in bar:
                crops = augment(train_x_t[batch_idx], cfg.scale_min, cfg.jitter, generator, cfg.crop_size)
                x = to_input(crops, spec, device)
                y = train_y_t[batch_idx].to(device, non_blocking=True)
                with autocast(device):
                    logits = model(x).float()
                loss = loss_fn(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                seen += len(y)
                loss_sum += loss.item() * len(y)
                correct += (logits.argmax(1) == y).sum().item()
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
            epoch_seconds = time.perf_counter() - started
            train_seconds += epoch_seconds
            val_loss, val_acc = evaluate_cached(model, val_x, val_y, spec, device)
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
            log.info(json.dumps(row))
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
            if val_acc > best_acc:
                best_acc = val_acc
                BEST_MODEL.parent.mkdir(parents=True, exist_ok=True)
                torch.save(
                    {
                        "state_dict": model.state_dict(),
                        "classes": list(params.data.classes),
                        "model": asdict(params.model),
                        "preprocessing": spec.to_json(),
                        "epoch": epoch + 1,
                        "val_accuracy": val_acc,
                        "data_version": data_version,
                    },
                    BEST_MODEL,
                )
            torch.save(
                {
                    "fingerprint": fingerprint,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(),
                    "epoch": epoch + 1,
                    "best_acc": best_acc,
                    "history": history,
                },
                CHECKPOINT,
            )

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
