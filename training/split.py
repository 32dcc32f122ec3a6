"""Stage 2, split: manifest -> deterministic, stratified train/val/test assignment.

    python -m training.split MANIFEST SPLIT_CSV REPORT   (dvc.yaml passes the paths; reads params.yaml
                                                          `split` and `data.classes`)

Outputs SPLIT_CSV (path,label,sha256,split) and REPORT, the counts per split and class.

Within each class, images are ranked by a hash of the image's sha256 keyed with
split.seed, never by input order: re-zipping the source in another order or
renaming files yields the identical split. Because ingest made sha256 unique,
an image (or a byte-identical copy) can only ever sit in one split.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from training.atomic import write_text_atomic
from training.cli import run_stage, stage_parser
from training.errors import MissingInputError, ParamsError
from training.params import SplitParams, load_params

SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ("path", "label", "sha256", "split")


@dataclass(frozen=True)
class SplitRow:
    path: str
    label: str
    sha256: str
    split: str


def rank_key(seed: int, sha256: str, purpose: str) -> str:
    """Keyed hash: a fixed pseudo-random order per seed, independent of input order and file names.

    `purpose` gives independent orders for choosing splits and for row order, so a
    split's first rows are not the ones nearest its per-class rank boundary.
    """
    key = f"{seed}:{purpose}".encode()
    return hashlib.blake2b(sha256.encode(), key=key, digest_size=16).hexdigest()


def split_sizes(n: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Per-class sizes; round half up (not Python's half-to-even) so equal inputs always agree."""
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ParamsError(
            f"split.val_fraction={val_fraction} and split.test_fraction={test_fraction} must be >= 0 "
            "and sum to less than 1; fix them in params.yaml"
        )
    test = min(math.floor(n * test_fraction + 0.5), n)
    val = min(math.floor(n * val_fraction + 0.5), n - test)
    return {"train": n - test - val, "val": val, "test": test}


def assign_splits(rows: Sequence[dict[str, str]], params: SplitParams, classes: Sequence[str]) -> list[SplitRow]:
    """Rows come from data/clean/manifest.csv. Output order: train, val, test; within each, by rank key.

    Ranked (not sorted by path) so classes interleave: any prefix of a split is a
    stratified random sample, e.g. for train.max_train_images.
    """
    unknown = {row["label"] for row in rows} - set(classes)
    if unknown:
        raise ParamsError(f"manifest labels {sorted(unknown)} are not in data.classes {list(classes)}; re-run ingest")
    assigned: list[SplitRow] = []
    for cls in classes:
        members = [r for r in rows if r["label"] == cls]
        members.sort(key=lambda r: rank_key(params.seed, r["sha256"], "assign"))
        sizes = split_sizes(len(members), params.val_fraction, params.test_fraction)
        # Test takes the first ranks, then val: changing val_fraction never moves a test image.
        start = 0
        for split in ("test", "val", "train"):
            stop = start + sizes[split]
            assigned += [SplitRow(r["path"], r["label"], r["sha256"], split) for r in members[start:stop]]
            start = stop
    assigned.sort(key=lambda row: (SPLITS.index(row.split), rank_key(params.seed, row.sha256, "order")))
    _assert_no_leakage(assigned)
    return assigned


def _assert_no_leakage(rows: Sequence[SplitRow]) -> None:
    shas = [row.sha256 for row in rows]
    if len(shas) != len(set(shas)):
        raise AssertionError("the same image sha256 appears twice in the split; ingest must de-duplicate first")


def split_counts(rows: Sequence[SplitRow], classes: Sequence[str]) -> dict[str, dict[str, int]]:
    counts = {split: {"total": 0, **{cls: 0 for cls in classes}} for split in SPLITS}
    for row in rows:
        counts[row.split][row.label] += 1
        counts[row.split]["total"] += 1
    return counts


def read_manifest(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        raise MissingInputError(f"{path} is missing; run `dvc repro ingest` first")
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def read_split(path: Path) -> list[SplitRow]:
    if not path.exists():
        raise MissingInputError(f"{path} is missing; run `dvc repro split` first")
    with path.open(newline="") as handle:
        return [SplitRow(**row) for row in csv.DictReader(handle)]


def write_split(dest: Path, rows: Sequence[SplitRow]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SPLIT_COLUMNS)
    writer.writerows((row.path, row.label, row.sha256, row.split) for row in rows)
    write_text_atomic(dest, buffer.getvalue())


def run_split(
    params: SplitParams,
    classes: Sequence[str],
    *,
    manifest_path: Path,
    split_path: Path,
    report_path: Path,
) -> dict[str, dict[str, int]]:
    rows = assign_splits(read_manifest(manifest_path), params, classes)
    write_split(split_path, rows)
    counts = split_counts(rows, classes)
    write_text_atomic(report_path, json.dumps(counts, indent=2) + "\n")
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser("training.split", __doc__)
    parser.add_argument("manifest", type=Path, help="the manifest ingest wrote")
    parser.add_argument("split_csv", type=Path, help="CSV to write: one row per image with its split")
    parser.add_argument("report", type=Path, help="JSON report: counts per split and class")
    args = parser.parse_args(argv)
    params = load_params()
    counts = run_split(
        params.split,
        params.data.classes,
        manifest_path=args.manifest,
        split_path=args.split_csv,
        report_path=args.report,
    )
    print(counts)


if __name__ == "__main__":
    run_stage(main)
