import hashlib
import itertools
import json

import pytest

from training.ingest import run_ingest
from training.params import SplitParams
from training.split import assign_splits, read_split, run_split, split_counts, split_sizes

from .builders import data_params, jpeg, kaggle_members, shuffled, write_tar, write_zip

CLASSES = ("cat", "dog")
PARAMS = SplitParams(seed=42, val_fraction=0.1, test_fraction=0.2)


def manifest_rows(n_cat: int, n_dog: int) -> list[dict[str, str]]:
    rows = []
    for label, n in (("cat", n_cat), ("dog", n_dog)):
        for i in range(n):
            sha = hashlib.sha256(f"{label}{i}".encode()).hexdigest()
            rows.append({"path": f"{label}/{sha}.jpg", "label": label, "sha256": sha})
    return rows


@pytest.mark.parametrize(
    ("n", "val", "test", "expected"),
    [
        (10_000, 0.1, 0.1, {"train": 8000, "val": 1000, "test": 1000}),
        (5, 0.1, 0.1, {"train": 3, "val": 1, "test": 1}),  # 0.5 rounds up, not to even
        (25, 0.1, 0.1, {"train": 19, "val": 3, "test": 3}),  # 2.5 -> 3 (Python's round gives 2)
        (3, 0.0, 0.0, {"train": 3, "val": 0, "test": 0}),
        (0, 0.1, 0.1, {"train": 0, "val": 0, "test": 0}),
    ],
)
def test_split_sizes_round_half_up_per_class(n, val, test, expected):
    assert split_sizes(n, val, test) == expected


@pytest.mark.parametrize(("val", "test"), [(0.5, 0.5), (-0.1, 0.1), (0.1, 1.0)])
def test_impossible_fractions_are_rejected_naming_the_params(val, test):
    with pytest.raises(ValueError, match="params.yaml"):
        split_sizes(10, val, test)


def test_split_is_stratified_with_exact_per_class_counts():
    rows = assign_splits(manifest_rows(200, 101), PARAMS, CLASSES)
    assert split_counts(rows, CLASSES) == {
        "train": {"total": 211, "cat": 140, "dog": 71},
        "val": {"total": 30, "cat": 20, "dog": 10},
        "test": {"total": 60, "cat": 40, "dog": 20},
    }


def test_split_does_not_depend_on_input_order():
    rows = manifest_rows(50, 50)
    assert assign_splits(shuffled(rows, 1), PARAMS, CLASSES) == assign_splits(rows, PARAMS, CLASSES)


def test_a_different_seed_gives_a_different_split():
    rows = manifest_rows(50, 50)
    other = SplitParams(seed=7, val_fraction=0.1, test_fraction=0.2)
    test_set = {r.sha256 for r in assign_splits(rows, PARAMS, CLASSES) if r.split == "test"}
    assert test_set != {r.sha256 for r in assign_splits(rows, other, CLASSES) if r.split == "test"}


def test_changing_val_fraction_keeps_the_test_set():
    rows = manifest_rows(60, 40)
    wider_val = SplitParams(seed=42, val_fraction=0.3, test_fraction=0.2)

    def test_set(params):
        return {r.sha256 for r in assign_splits(rows, params, CLASSES) if r.split == "test"}

    assert test_set(PARAMS) == test_set(wider_val)


def test_no_image_is_in_two_splits():
    rows = assign_splits(manifest_rows(100, 100), PARAMS, CLASSES)
    by_split = {split: {r.sha256 for r in rows if r.split == split} for split in ("train", "val", "test")}
    assert not (
        by_split["train"] & by_split["val"]
        or by_split["train"] & by_split["test"]
        or by_split["val"] & by_split["test"]
    )
    assert sum(map(len, by_split.values())) == 200


def test_duplicate_sha_in_manifest_is_refused():
    rows = manifest_rows(10, 10)
    rows.append(dict(rows[0], path="cat/copy.jpg"))
    with pytest.raises(AssertionError, match="de-duplicate"):
        assign_splits(rows, PARAMS, CLASSES)


def test_unknown_label_is_refused():
    rows = manifest_rows(3, 3) + [{"path": "bird/x.jpg", "label": "bird", "sha256": "f" * 64}]
    with pytest.raises(ValueError, match="data.classes"):
        assign_splits(rows, PARAMS, CLASSES)


def test_rows_are_grouped_by_split():
    rows = assign_splits(manifest_rows(100, 100), PARAMS, CLASSES)
    assert [r.split for r in rows] == sorted((r.split for r in rows), key=("train", "val", "test").index)


@pytest.mark.parametrize("seed", range(6))
def test_classes_interleave_from_the_first_row_of_each_split(seed):
    # A prefix (train.max_train_images, export's parity images) must be a mixed sample,
    # not a long run of one class from where the per-class split boundaries fall.
    rows = assign_splits(manifest_rows(2000, 2000), SplitParams(seed, 0.1, 0.2), CLASSES)
    for split in ("train", "val", "test"):
        first = [r.label for r in rows if r.split == split][:100]
        assert max(len(list(run)) for _, run in itertools.groupby(first)) < 20, (split, first)


def test_split_files_are_identical_for_reordered_archives(tmp_path):
    members = kaggle_members(12) + [("train/cat.0-copy.jpg", jpeg(0))]
    outputs = []
    for i, archive in enumerate([write_zip, write_zip, write_tar]):
        run_dir = tmp_path / str(i)
        run_dir.mkdir()
        source = archive(run_dir / ("s.tar.gz" if archive is write_tar else "s.zip"), shuffled(members, i))
        report = run_ingest(
            data_params(source), raw_dir=run_dir / "raw", clean_dir=run_dir / "clean", report_path=run_dir / "data.json"
        )
        run_split(
            PARAMS,
            CLASSES,
            manifest_path=run_dir / "clean/manifest.csv",
            split_path=run_dir / "split.csv",
            report_path=run_dir / "split.json",
        )
        outputs.append(
            (report["data_version"], (run_dir / "split.csv").read_bytes(), (run_dir / "split.json").read_bytes())
        )
    assert outputs[0] == outputs[1] == outputs[2]
    counts = json.loads(outputs[0][2])
    assert counts["test"] == {"total": 4, "cat": 2, "dog": 2}  # 12 * 0.2 = 2.4 -> 2 per class
    assert len(read_split(tmp_path / "0/split.csv")) == 24
