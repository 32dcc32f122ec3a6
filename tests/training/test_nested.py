"""Kaggle's competition download: dogs-vs-cats.zip holding train.zip (labelled) and test1.zip (unlabelled)."""

import json
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.helpers.paths import REPO
from tests.helpers.pipeline import stage_command
from training.nested import unwrap
from training.sources import SourceError

from .builders import jpeg, kaggle_members, write_tar, write_zip

CLASSES = ("cat", "dog")


def kaggle_download(tmp_path: Path, *, with_train: bool = True) -> Path:
    """What `kaggle competitions download -c dogs-vs-cats` saves, with a few synthetic photos per archive."""
    inner = tmp_path / "inner"
    inner.mkdir()
    members: list[tuple[str, bytes]] = []
    if with_train:
        members.append(("train.zip", write_zip(inner / "train.zip", kaggle_members(3)).read_bytes()))
    test1 = write_zip(inner / "test1.zip", [(f"test1/{i}.jpg", jpeg(500 + i)) for i in range(1, 5)])
    members += [("test1.zip", test1.read_bytes()), ("sampleSubmission.csv", b"id,label\n1,0\n")]
    return write_zip(tmp_path / "dogs-vs-cats.zip", members)


def test_kaggle_competition_zip_is_ingested_from_its_labelled_inner_archive(tmp_path):
    """`python -m training.ingest` as DVC runs it, on the competition zip as downloaded."""
    source = kaggle_download(tmp_path)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["source"] = str(source)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(
        stage_command("ingest"),
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "using train.zip, the labelled archive inside data.source" in result.stderr
    assert "test1.zip: 4 images, none with a class in its path" in result.stderr
    report = json.loads((tmp_path / "reports/data.json").read_text())
    assert report["kept"] == {"total": 6, "cat": 3, "dog": 3}
    assert report["dropped"]["not_an_image"] == 0  # the inner zips are not counted as bad images
    assert report["source"]["path"] == str(source) and report["source"]["inner"] == "train.zip"
    assert set(report["source"]["skipped"]) == {"test1.zip", "sampleSubmission.csv"}
    assert sorted(p.name for p in (tmp_path / "data/raw/unwrapped").iterdir()) == ["train.zip"]


def test_wrapper_tar_is_unwrapped_too(tmp_path):
    train = write_zip(tmp_path / "train.zip", kaggle_members(2)).read_bytes()
    wrapper = write_tar(tmp_path / "bundle.tar.gz", [("bundle/train.zip", train)])
    unwrapped = unwrap(wrapper, CLASSES, tmp_path / "work")
    assert unwrapped is not None and unwrapped.inner == "bundle/train.zip"
    with zipfile.ZipFile(unwrapped.location) as archive:
        assert len(archive.namelist()) == 4


def test_unreadable_inner_archive_is_skipped_with_the_reason(tmp_path):
    train = write_zip(tmp_path / "train.zip", kaggle_members(2)).read_bytes()
    source = write_zip(tmp_path / "bundle.zip", [("broken.zip", b"not a zip at all"), ("train.zip", train)])
    unwrapped = unwrap(source, CLASSES, tmp_path / "work")
    assert unwrapped is not None and unwrapped.inner == "train.zip"
    assert unwrapped.skipped["broken.zip"].startswith("not a readable archive")
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["train.zip"]


def test_archive_with_images_of_its_own_is_not_unwrapped(tmp_path):
    inner = write_zip(tmp_path / "extra.zip", kaggle_members(1)).read_bytes()
    source = write_zip(tmp_path / "mixed.zip", [*kaggle_members(2), ("extra.zip", inner)])
    assert unwrap(source, CLASSES, tmp_path / "work") is None
    assert not (tmp_path / "work").exists()


def test_wrapper_without_a_labelled_archive_says_what_to_pass_instead(tmp_path):
    source = kaggle_download(tmp_path, with_train=False)
    with pytest.raises(SourceError) as error:
        unwrap(source, CLASSES, tmp_path / "work")
    message = str(error.value)
    assert "test1.zip: 4 images, none with a class in its path" in message
    assert "pass Kaggle's train.zip (inside dogs-vs-cats.zip; not test1.zip, which is unlabelled)" in message
    assert list((tmp_path / "work").iterdir()) == []


def test_wrapper_with_two_labelled_archives_names_the_commands_for_one(tmp_path):
    first = write_zip(tmp_path / "a.zip", kaggle_members(1)).read_bytes()
    second = write_zip(tmp_path / "b.zip", kaggle_members(1, seed=7)).read_bytes()
    source = write_zip(tmp_path / "both.zip", [("a.zip", first), ("b.zip", second)])
    with pytest.raises(SourceError) as error:
        unwrap(source, CLASSES, tmp_path / "work")
    assert f"`unzip -j {source} a.zip -d data/raw` then `dvc exp run --temp -S data.source=data/raw/a.zip`" in str(
        error.value
    )
