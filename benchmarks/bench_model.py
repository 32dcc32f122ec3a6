"""Model-only cost of an ONNX file: size and 1-image latency on one CPU thread (a script, not a test).

    .venv-serve/bin/python benchmarks/bench_model.py [models/model.onnx ...] [--runs 2000]

Loads each model through the service's own loader with one intra-op thread,
feeds it the bundled deploy samples preprocessed by the service's contract,
and prints file size, p50/p99/mean latency of a 1-image batch and the
predictions. Several models are timed in interleaved rounds, so a noisy
machine skews them alike and their ratio stays meaningful.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.model import OnnxModel, SessionTuning, load_model  # noqa: E402
from service.preprocessing import preprocess  # noqa: E402

SAMPLES = sorted((REPO / "deploy" / "samples").glob("*.jpg"))
ROUNDS = 10


def time_batches(model: OnnxModel, batches: list[np.ndarray], runs: int) -> list[float]:
    timings = []
    for i in range(runs):
        batch = batches[i % len(batches)]
        started = time.perf_counter()
        model.predict(batch)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, default=[REPO / "models" / "model.onnx"])
    parser.add_argument("--runs", type=int, default=2000, help="timed 1-image runs per model")
    args = parser.parse_args()

    loaded = [load_model(path, SessionTuning(intra_op_threads=1, inter_op_threads=1)) for path in args.models]
    inputs = {}
    for model in loaded:
        spec = model.metadata.preprocessing
        inputs[model.path] = [preprocess(path.read_bytes(), spec) for path in SAMPLES]
        time_batches(model, inputs[model.path], 50)  # warm-up
    timings: dict[Path, list[float]] = {model.path: [] for model in loaded}
    for _ in range(ROUNDS):
        for model in loaded:
            timings[model.path] += time_batches(model, inputs[model.path], max(1, args.runs // ROUNDS))

    print(f"{'model':<40} {'MB':>6} {'input':>6} {'p50 ms':>7} {'p99 ms':>7} {'mean ms':>8}  samples")
    for model in loaded:
        runs = sorted(timings[model.path])
        spec = model.metadata.preprocessing
        labels = ", ".join(
            f"{path.stem}->{model.metadata.classes[int(probs.argmax())]} {probs.max():.3f}"
            for path, probs in zip(SAMPLES, (model.predict(x)[0] for x in inputs[model.path]), strict=True)
        )
        print(
            f"{str(model.path):<40} {model.path.stat().st_size / 1e6:>6.2f} {spec.image_size:>6} "
            f"{statistics.median(runs):>7.3f} {runs[int(len(runs) * 0.99) - 1]:>7.3f} "
            f"{statistics.fmean(runs):>8.3f}  {labels}"
        )


if __name__ == "__main__":
    main()
