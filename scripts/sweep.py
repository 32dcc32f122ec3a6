"""The from-scratch cnn: accuracy against training minutes for a few sizes and resolutions (docs/model.md).

    .venv/bin/python scripts/sweep.py             # run every point not yet in docs/sweep.csv, then report
    .venv/bin/python scripts/sweep.py --collect   # run nothing: redraw the plot and the table from the record

Each point is `dvc exp run --temp` of the whole pipeline on the full archive with
the committed params.yaml, the from-scratch recipe (CNN_RECIPE) and the point's
overrides, so a row is exactly what `dvc repro` with those values gives.
docs/sweep.csv is the record: a finished point's per-epoch validation accuracy and
the training stage's own clock are written there from its experiment's reports, so
the record outlives the experiment refs. The serving-side sweep of the pretrained
model is scripts/sweep_serving.py.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = (REPO.parent / "shared" / "data" / "dogs-vs-cats-20k.zip").resolve()
SWEEP_CSV = REPO / "docs" / "sweep.csv"
SWEEP_PLOT = REPO / "docs" / "sweep.png"
COLUMNS = ["point", "eval_px", "crop_px", "width", "epochs", "epoch", "minutes", "val_accuracy"]
# What the bundled model used before the pretrained backbone: the point "cnn80" in the record.
CNN_RECIPE: dict[str, object] = {
    "model.arch": "cnn",
    "model.pretrained": False,
    "model.frozen_blocks": 0,
    "model.width": 16,
    "model.dropout": 0.1,
    "preprocess.mean": "[0.485,0.456,0.406]",
    "preprocess.std": "[0.229,0.224,0.225]",
    "train.batch_size": 128,
    "train.lr": 0.004,
    "train.jitter": 0.3,
    "export.flip_tta": True,
    "quantize.enabled": False,
}

# Names: s = eval/serve size, c = training crop size, w = width (16 unless named).
POINTS: dict[str, dict[str, object]] = {
    "s64c64": {"preprocess.image_size": 64, "train.crop_size": 64, "train.epochs": 12},
    "s64c56": {"preprocess.image_size": 64, "train.crop_size": 56, "train.epochs": 12},
    "s80c64": {"preprocess.image_size": 80, "train.crop_size": 64, "train.epochs": 12},
    "cnn80": {"preprocess.image_size": 80, "train.crop_size": 64, "train.epochs": 80},
}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, text=True, capture_output=True, check=True).stdout


def read_record() -> dict[str, list[dict]]:
    """point -> its per-epoch rows, from docs/sweep.csv."""
    record: dict[str, list[dict]] = {}
    if SWEEP_CSV.exists():
        with SWEEP_CSV.open(newline="") as handle:
            for row in csv.DictReader(handle):
                record.setdefault(row["point"], []).append(row)
    return record


def write_record(record: dict[str, list[dict]]) -> None:
    with SWEEP_CSV.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS, lineterminator="\n")
        writer.writeheader()
        for rows in record.values():
            writer.writerows(rows)


def run_rows(name: str, params: dict, history_csv: str) -> list[dict]:
    """One run's per-epoch rows: cumulative training minutes and validation accuracy."""
    minutes, rows = 0.0, []
    for epoch in csv.DictReader(io.StringIO(history_csv)):
        minutes += float(epoch["seconds"]) / 60
        rows.append(
            {
                "point": name,
                "eval_px": params["preprocess"]["image_size"],
                "crop_px": params["train"].get("crop_size") or params["preprocess"]["image_size"],
                "width": params["model"]["width"],
                "epochs": params["train"]["epochs"],
                "epoch": epoch["epoch"],
                "minutes": round(minutes, 2),
                "val_accuracy": epoch["val_accuracy"],
            }
        )
    return rows


def run_point(name: str, overrides: dict[str, object]) -> list[dict]:
    args = ["dvc", "exp", "run", "--temp", "-n", name, "-S", f"data.source={ARCHIVE}"]
    args += [f"-S{key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in overrides.items()]
    print(f"running {name}: {' '.join(args)}", flush=True)
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if subprocess.run(args, cwd=REPO, env=env, check=False).returncode != 0:
        raise SystemExit(f"{name} failed; its log is above")
    ref = git("for-each-ref", f"refs/exps/**/{name}", "--format=%(objectname)").split()[-1]
    params = yaml.safe_load(git("show", f"{ref}:params.yaml"))
    return run_rows(name, params, git("show", f"{ref}:reports/train_history.csv"))


def plot(record: dict[str, list[dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, rows in record.items():
        minutes = [float(row["minutes"]) for row in rows]
        accuracy = [100 * float(row["val_accuracy"]) for row in rows]
        line = ax.plot(minutes, accuracy, alpha=0.35, linewidth=1)[0]
        best = max(accuracy)
        ax.plot([minutes[-1]], [best], "o", color=line.get_color(), label=f"{name}: {best:.2f}%")
    ax.set(xlabel="training minutes (2 CPU cores)", ylabel="validation accuracy %", ylim=(80, 100))
    ax.set_title("Each run's epochs (line) and its best validation accuracy at its total time (dot)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(SWEEP_PLOT)


def table(record: dict[str, list[dict]]) -> str:
    lines = [
        "| point | eval px | crop px | width | epochs | train min | best val acc |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in sorted(record.items(), key=lambda item: float(item[1][-1]["minutes"])):
        first, best = rows[0], max(float(row["val_accuracy"]) for row in rows)
        lines.append(
            f"| {name} | {first['eval_px']} | {first['crop_px']} | {first['width']} | {first['epochs']} "
            f"| {float(rows[-1]['minutes']):.1f} | {100 * best:.2f}% |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collect", action="store_true", help="run nothing; redraw the plot and table")
    args = parser.parse_args()
    record = read_record()
    if not args.collect:
        if not ARCHIVE.exists():
            raise SystemExit(f"{ARCHIVE} not found: the sweep reads the full 20k archive beside the repo")
        for name, overrides in POINTS.items():
            if name not in record:
                record[name] = run_point(name, CNN_RECIPE | overrides)
                write_record(record)
    plot(record)
    print(table(record))
    print(f"wrote {SWEEP_CSV.relative_to(REPO)} and {SWEEP_PLOT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
