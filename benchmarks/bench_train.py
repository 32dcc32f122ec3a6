"""Training throughput on this machine's device: augmentation, the step, and the real loop (a script, not a test).

    .venv/bin/python benchmarks/bench_train.py [--batches 64 256] [--steps 20] [--loop-steps 300] [--compare main]

For each batch size, images per second of:
- host augment: today's CPU path, augment() on the host then the numpy normalize() and a float32 copy to the device;
- device augment: the uint8 batch on the device, augment() and normalize() there (on a CPU run: the same, on the CPU);
- step alone: forward, backward and AdamW on a ready input (bf16 autocast on CUDA);
- loop: the train stage itself (its `cmd` from that code's dvc.yaml), run in a scratch workspace on synthetic
  uint8 caches of the prepared shape, its own per-epoch images/s (epochs after the first, which carries the
  warm-up). Under CUDA the SM busy share is sampled meanwhile (pynvml, else nvidia-smi), median over the
  samples from the first busy one to the last.
With --compare REV the loop also runs the code of git revision REV (training/, service/, dvc.yaml: `git archive`) on
the same workspace, interleaved with this tree's, so both figures come from one run on one machine.

Needs neither dvc nor mlflow (without mlflow, training warns once and carries on) nor the ImageNet weights: the
model is params.yaml's with model.pretrained false, which costs the same. Pixels are random: speed does not
depend on them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.preprocessing import normalize as host_normalize  # noqa: E402
from training import batches  # noqa: E402
from training.augment import augment  # noqa: E402
from training.model import build_model  # noqa: E402
from training.params import Params, load_params  # noqa: E402

WARMUP = 3
SAMPLE_EVERY_S = 0.2
VAL_IMAGES = 256


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(requested)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(run: Callable[[], object], batch: int, steps: int, device: torch.device) -> float:
    for _ in range(WARMUP):
        run()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        run()
    synchronize(device)
    return batch * steps / (time.perf_counter() - started)


def bench_parts(params: Params, batch: int, steps: int, device: torch.device) -> dict[str, float]:
    """Host augment, device augment and the step alone, in this process."""
    cfg, spec = params.train, params.preprocess
    size = spec.image_size
    host_cache = torch.randint(0, 256, (batch * 2, size, size, 3), dtype=torch.uint8)
    device_cache = host_cache.to(device)
    host_gen = torch.Generator().manual_seed(0)
    device_gen = torch.Generator(device=device).manual_seed(0)

    def host_augment() -> torch.Tensor:
        rows = torch.randint(0, len(host_cache), (batch,), generator=host_gen)
        crops = augment(host_cache[rows], cfg.scale_min, cfg.jitter, host_gen, cfg.crop_size)
        x = torch.from_numpy(host_normalize(crops.numpy(), spec)).to(device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last)

    def device_augment() -> torch.Tensor:
        rows = torch.randint(0, len(device_cache), (batch,), generator=device_gen, device=device)
        crops = augment(device_cache[rows], cfg.scale_min, cfg.jitter, device_gen, cfg.crop_size)
        return batches.normalize(crops, spec)

    arch = params.model
    model = build_model(2, arch.width, arch.dropout, arch=arch.arch, frozen_blocks=arch.frozen_blocks)
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x, y = device_augment(), torch.randint(0, 2, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x).float()
        loss = torch.nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return {
        "host augment": images_per_second(host_augment, batch, steps, device),
        "device augment": images_per_second(device_augment, batch, steps, device),
        "step alone": images_per_second(step, batch, steps, device),
    }


class SmSampler:
    """Samples the GPU's SM busy percentage in the background: pynvml if importable, else nvidia-smi."""

    def __init__(self, index: int) -> None:
        self.index, self.samples, self._stop = index, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SmSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        read = self._nvml_reader() or self._smi_reader()
        while not self._stop.wait(SAMPLE_EVERY_S):
            self.samples.append(read())

    def _nvml_reader(self) -> Callable[[], float] | None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
        except Exception:  # noqa: BLE001 - any failure means: fall back to nvidia-smi
            return None
        return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)

    def _smi_reader(self) -> Callable[[], float]:
        command = ["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        return lambda: float(subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip())

    def busy_median(self) -> float | None:
        """Median over the samples from the first busy one to the last: start-up and exit are not the loop."""
        busy = [i for i, value in enumerate(self.samples) if value >= 1]
        return statistics.median(self.samples[busy[0] : busy[-1] + 1]) if busy else None


def loop_params(code: Path, batch: int, epochs: int, device: str) -> str:
    """That code tree's own params.yaml (its keys may differ from this one's), set up for the timed loop."""
    raw = yaml.safe_load((code / "params.yaml").read_text())
    raw["model"]["pretrained"] = False
    raw["train"] |= {"epochs": epochs, "batch_size": batch, "max_train_images": None, "processes": 1}
    raw["train"] |= {"device": device, "head_only_epochs": 0}
    return yaml.safe_dump(raw)


def write_workspace(root: Path, params: Params, batch: int, loop_steps: int, epochs: int) -> None:
    """Synthetic prepared caches for a train stage of loop_steps steps over `epochs` epochs."""
    prepared = root / "data" / "prepared"
    prepared.mkdir(parents=True)
    rng = np.random.default_rng(0)
    size = params.preprocess.image_size
    counts = {"train": max(1, loop_steps // epochs) * batch, "val": VAL_IMAGES, "test": 2}
    for split, count in counts.items():
        np.save(prepared / f"{split}_images.npy", rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8))
        np.save(prepared / f"{split}_labels.npy", rng.integers(0, 2, count).astype(np.int64))
    (root / "reports").mkdir()
    (root / "reports" / "data.json").write_text(json.dumps({"data_version": "bench"}))


def run_loop(workspace: Path, code: Path, device: torch.device, batch: int, epochs: int) -> tuple[float, float | None]:
    """(images/s of the epochs after the first, median SM busy) of the train stage from `code`."""
    (workspace / "params.yaml").write_text(loop_params(code, batch, epochs, device.type))
    for stale in ("models", "mlruns", "mlflow.db"):
        target = workspace / stale
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
    command = [sys.executable, *train_command(code)[1:]]
    env = {**os.environ, "PYTHONPATH": str(code)}
    sampler = SmSampler(device.index or 0) if device.type == "cuda" else None
    with sampler if sampler is not None else nullcontext():
        done = subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"the train stage from {code} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    with (workspace / "reports" / "train_history.csv").open() as handle:
        rates = [float(row["images_per_second"]) for row in csv.DictReader(handle)]
    steady = rates[1:] or rates
    return statistics.mean(steady), sampler.busy_median() if sampler is not None else None


def train_command(code: Path) -> list[str]:
    """The train stage's command as that code's dvc.yaml writes it (`python -m training.train [paths]`)."""
    return yaml.safe_load((code / "dvc.yaml").read_text())["stages"]["train"]["cmd"].split()


def code_at(revision: str, into: Path) -> Path:
    """training/, service/, dvc.yaml and params.yaml as they are at a git revision, extracted under `into`."""
    paths = ["training", "service", "dvc.yaml", "params.yaml"]
    command = ["git", "-C", str(REPO), "archive", revision, *paths]
    archive = subprocess.run(command, capture_output=True, check=True).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--steps", type=int, default=None, help="timed steps per part (default: 50 CUDA, 3 CPU)")
    parser.add_argument(
        "--loop-steps", type=int, default=None, help="optimizer steps of the real loop (default: 300 CUDA, 6 CPU)"
    )
    parser.add_argument("--epochs", type=int, default=3, help="the loop's steps spread over this many epochs")
    parser.add_argument("--compare", metavar="REV", help="also run the loop of this git revision, interleaved")
    parser.add_argument("--repeats", type=int, default=1, help="loop runs per code version (their mean is shown)")
    args = parser.parse_args()

    device = pick_device(args.device)
    cuda = device.type == "cuda"
    steps = args.steps or (50 if cuda else 3)
    loop_steps = args.loop_steps or (300 if cuda else 6)
    params = load_params(REPO / "params.yaml")
    params = replace(params, model=replace(params.model, pretrained=False))
    if not cuda:
        torch.set_num_threads(params.train.threads)

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_train_") as scratch:
        old_code = code_at(args.compare, Path(scratch) / "old") if args.compare else None
        for batch in args.batches:
            row = {"batch": batch} | bench_parts(params, batch, steps, device)
            workspace = Path(scratch) / f"b{batch}"
            workspace.mkdir()
            write_workspace(workspace, params, batch, loop_steps, args.epochs)
            new_runs, old_runs, busy = [], [], []
            for repeat in range(args.repeats):
                print(f"batch {batch}: loop run {repeat + 1}/{args.repeats}", file=sys.stderr, flush=True)
                if old_code is not None:
                    old_runs.append(run_loop(workspace, old_code, device, batch, args.epochs)[0])
                    print(f"  loop at {args.compare}: {old_runs[-1]:.1f} images/s", file=sys.stderr, flush=True)
                rate, sm = run_loop(workspace, REPO, device, batch, args.epochs)
                new_runs.append(rate)
                print(f"  loop: {rate:.1f} images/s", file=sys.stderr, flush=True)
                busy += [sm] if sm is not None else []
            row["loop"] = statistics.mean(new_runs)
            if old_runs:
                row[f"loop at {args.compare}"] = statistics.mean(old_runs)
            if cuda:
                row["SM busy % (loop)"] = statistics.median(busy) if busy else float("nan")
            rows.append(row)
            print(f"batch {batch}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k != "batch"), flush=True)

    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    crop = params.train.crop_size or params.preprocess.image_size
    print(
        f"\n{name}; torch {torch.__version__}; {params.model.arch} (frozen_blocks {params.model.frozen_blocks}), "
        f"{crop} px crops from {params.preprocess.image_size} px; {'bf16 autocast' if cuda else 'fp32'}; "
        f"parts {steps} steps, loop {loop_steps} steps over {args.epochs} epochs x {args.repeats}; images/s\n"
    )
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(_figure(row[c]) if c != "batch" else str(row[c]) for c in columns) + " |")


def _figure(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


if __name__ == "__main__":
    main()
