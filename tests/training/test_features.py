"""The teacher features stage: one flip-averaged pooled vector per train and val photo, none for test."""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from service.preprocessing import preprocess
from tests.helpers.paths import MINI_ZIP
from training.features import extract, load_teacher, teacher_spec
from training.params import TeacherParams

CFG = TeacherParams(variant="lite2", image_size=64, flip=True, batch_size=4, threads=2, folds=2, l2=0.1, seed=0)


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Nine photos of the mini archive: four train, three val, two test."""
    folder = tmp_path_factory.mktemp("tiny")
    with zipfile.ZipFile(MINI_ZIP) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".jpg"))
        picked = names[:5] + names[-4:]  # both classes
        with zipfile.ZipFile(folder / "images.zip", "w") as out:
            for name in picked:
                out.writestr(name, archive.read(name))
    splits = ["train", "val", "test", "train", "val", "train", "test", "val", "train"]
    rows = "".join(
        f"{name},{'dog' if 'dog' in name.lower() else 'cat'},{i:064x},{split}\n"
        for i, (name, split) in enumerate(zip(picked, splits, strict=True))
    )
    (folder / "split.csv").write_text("path,label,sha256,split\n" + rows)
    return folder / "images.zip", folder / "split.csv"


def test_features_cover_train_and_val_only_with_the_flip_averaged_teacher_vector(
    tiny_split: tuple[Path, Path], tmp_path: Path
) -> None:
    images_zip, split_csv = tiny_split
    timing = extract(CFG, ("cat", "dog"), images_zip, split_csv, tmp_path / "features.npz")
    data = np.load(tmp_path / "features.npz")
    assert timing["photos"] == 7 and list(data["split"]) == ["train"] * 4 + ["val"] * 3
    assert data["features"].shape == (7, 1280) and np.isfinite(data["features"]).all()
    assert set(data["label"]) == {0, 1} and list(data["classes"]) == ["cat", "dog"]

    first = str(data["path"][0])
    with zipfile.ZipFile(images_zip) as archive:
        x = torch.from_numpy(preprocess(archive.read(first), teacher_spec(CFG)))
    net = load_teacher(CFG)
    with torch.no_grad():
        expected = ((net.pooled(x) + net.pooled(x.flip(3))) / 2).numpy()[0]
    np.testing.assert_allclose(data["features"][0], expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(data["features"][0], data["features"][1])

    single = dataclasses.replace(CFG, flip=False)
    extract(single, ("cat", "dog"), images_zip, split_csv, tmp_path / "single.npz")
    with torch.no_grad():
        np.testing.assert_allclose(
            np.load(tmp_path / "single.npz")["features"][0], net.pooled(x).numpy()[0], rtol=1e-4, atol=1e-5
        )
