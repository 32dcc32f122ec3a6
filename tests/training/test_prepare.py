import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.preprocessing import load_pixels
from training.ingest import run_ingest
from training.params import SplitParams
from training.prepare import load_split, run_prepare
from training.split import read_split, run_split

from .builders import data_params, encode, kaggle_members, pixels, write_zip

CLASSES = ("cat", "dog")
SIZE = 16


def pipeline(tmp_path: Path, members) -> Path:
    """ingest -> split -> prepare on a synthetic zip; returns the working folder."""
    source = write_zip(tmp_path / "source.zip", members)
    run_ingest(
        data_params(source), raw_dir=tmp_path / "raw", clean_dir=tmp_path / "clean", report_path=tmp_path / "data.json"
    )
    run_split(
        SplitParams(seed=0, val_fraction=0.2, test_fraction=0.2),
        CLASSES,
        manifest_path=tmp_path / "clean/manifest.csv",
        split_path=tmp_path / "split.csv",
        report_path=tmp_path / "split.json",
    )
    run_prepare(
        SIZE,
        CLASSES,
        split_path=tmp_path / "split.csv",
        zip_path=tmp_path / "clean/images.zip",
        out_dir=tmp_path / "prepared",
    )
    return tmp_path


def test_prepared_arrays_follow_split_csv_with_serving_pixels(tmp_path):
    work = pipeline(tmp_path, kaggle_members(10))
    rows = read_split(work / "split.csv")
    with zipfile.ZipFile(work / "clean/images.zip") as archive:
        for split, n in (("train", 12), ("val", 4), ("test", 4)):
            images, labels = load_split(work / "prepared", split)
            assert isinstance(images, np.memmap) and not images.flags.writeable
            assert images.shape == (n, SIZE, SIZE, 3) and images.dtype == np.uint8
            assert labels.shape == (n,) and labels.dtype == np.int64
            split_rows = [row for row in rows if row.split == split]
            assert labels.tolist() == [CLASSES.index(row.label) for row in split_rows]
            for image, row in zip(images, split_rows, strict=True):
                np.testing.assert_array_equal(image, load_pixels(archive.read(row.path), SIZE))


def test_prepare_output_is_byte_reproducible(tmp_path):
    work = pipeline(tmp_path, kaggle_members(8))
    run_prepare(
        SIZE, CLASSES, split_path=work / "split.csv", zip_path=work / "clean/images.zip", out_dir=work / "again"
    )
    for name in sorted(p.name for p in (work / "prepared").iterdir()):
        assert (work / "prepared" / name).read_bytes() == (work / "again" / name).read_bytes(), name


def _only_image(work: Path) -> np.ndarray:
    images = np.concatenate([load_split(work / "prepared", split)[0] for split in ("train", "val", "test")])
    assert len(images) == 1
    return images[0]


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def test_exif_rotated_image_is_prepared_upright(tmp_path):
    upright = Image.fromarray(pixels(3, size=(40, 56)))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # orientation 6 turns it back
    work = pipeline(tmp_path, [("train/cat.1.jpg", encode(stored, "PNG", exif=_exif(6)))])
    np.testing.assert_array_equal(_only_image(work), load_pixels(encode(upright, "PNG"), SIZE))


def test_exif_rotated_jpeg_is_prepared_upright(tmp_path):
    ramp = np.linspace(0, 255, 56, dtype=np.uint8)[:, None].repeat(40, axis=1)  # dark top, bright bottom
    upright = Image.fromarray(np.dstack([ramp] * 3))
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    work = pipeline(tmp_path, [("train/dog.1.jpg", encode(stored, "JPEG", quality=95, exif=_exif(6)))])
    expected = load_pixels(encode(upright, "PNG"), SIZE).astype(int)
    assert np.abs(_only_image(work).astype(int) - expected).max() <= 8


def test_grayscale_and_16_bit_images_become_equal_rgb_channels(tmp_path):
    gray = pixels(4)[..., 0]
    work = pipeline(tmp_path, [("cats/a.png", encode(Image.fromarray(gray.astype(np.uint16) * 257), "PNG"))])
    image = _only_image(work)
    np.testing.assert_array_equal(image, load_pixels(encode(Image.fromarray(gray), "PNG"), SIZE))
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


@pytest.mark.parametrize(
    "image",
    [
        Image.fromarray(pixels(5)).convert("CMYK"),
        Image.fromarray(np.dstack([pixels(6), pixels(7)[..., :1]])),
        Image.fromarray(pixels(8)).convert("P", palette=Image.Palette.ADAPTIVE),
    ],
    ids=["cmyk", "rgba", "palette"],
)
def test_cmyk_alpha_and_palette_images_are_prepared_as_rgb(tmp_path, image):
    data = encode(image, "JPEG" if image.mode == "CMYK" else "PNG")
    work = pipeline(tmp_path, [("cats/x.img", data)])
    np.testing.assert_array_equal(_only_image(work), load_pixels(data, SIZE))


def test_load_split_explains_missing_outputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro prepare"):
        load_split(tmp_path, "train")
    with pytest.raises(ValueError, match="unknown split"):
        load_split(tmp_path, "holdout")
