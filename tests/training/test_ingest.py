import csv
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.paths import MINI_ZIP
from training.ingest import MANIFEST_COLUMNS, run_ingest
from training.screening import DROP_REASONS

from .builders import (
    data_params,
    encode,
    jpeg,
    kaggle_members,
    pixels,
    png,
    shuffled,
    write_dir,
    write_tar,
    write_zip,
)


def ingest(tmp_path: Path, source: Path, **kwargs) -> tuple[dict, list[dict[str, str]], Path]:
    out = tmp_path / "out"
    report = run_ingest(
        data_params(source, **kwargs),
        raw_dir=out / "raw",
        clean_dir=out / "clean",
        report_path=out / "reports/data.json",
    )
    assert json.loads((out / "reports/data.json").read_text()) == report
    with (out / "clean/manifest.csv").open(newline="") as handle:
        manifest = list(csv.DictReader(handle))
    return report, manifest, out / "clean/images.zip"


def write(container: str, tmp_path: Path, members) -> Path:
    if container == "zip":
        return write_zip(tmp_path / "source.zip", members)
    if container == "tar.gz":
        return write_tar(tmp_path / "source.tar.gz", members)
    return write_dir(tmp_path / "source", members)


LAYOUTS = {
    "kaggle": kaggle_members(3),
    "kaggle_at_root": kaggle_members(3, prefix=""),
    "petimages": [
        (f"PetImages/{cls}/{i}.jpg", jpeg(10 * c + i)) for c, cls in enumerate(("Cat", "Dog")) for i in range(3)
    ],
    "class_folders": [
        ("train/cats/a.jpg", jpeg(1)),
        ("train/dogs/b.jpg", jpeg(2)),
        ("test/cats/c.jpg", jpeg(3)),
        ("test/dogs/d.jpg", jpeg(4)),
        ("cat/e.jpg", jpeg(5)),
        ("Dogs/f.jpg", jpeg(6)),
    ],
}


@pytest.mark.parametrize("container", ["zip", "tar.gz", "directory"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_in_every_container_is_labelled(tmp_path, layout, container):
    report, manifest, _ = ingest(tmp_path, write(container, tmp_path, LAYOUTS[layout]))
    assert report["kept"] == {"total": 6, "cat": 3, "dog": 3}
    assert report["dropped"]["total"] == 0
    for row in manifest:
        expected = "cat" if "cat" in row["source_path"].lower() else "dog"
        assert row["label"] == expected


BAD_FILES = [
    ("train/cat.100.jpg", b"", "empty_file"),
    ("train/cat.101.jpg", jpeg(101)[: len(jpeg(101)) // 2], "truncated"),
    ("train/dog.102.jpg", b"this is a text file renamed to .jpg\n" * 5, "not_an_image"),
    ("train/dog.103.jpg", jpeg(103, size=(31, 200)), "tiny"),
    ("train/cat.105.jpg", None, "undecodable"),  # PNG whose pixel stream is corrupt, see below
    ("train/README.txt", b"notes", "not_an_image"),
    ("test1/7.jpg", jpeg(107), "unlabelled"),
    ("__MACOSX/train/._cat.1.jpg", b"\x00\x05\x16\x07", "system_file"),
    ("train/Thumbs.db", b"\xd0\xcf\x11\xe0", "system_file"),
    ("train/.DS_Store", b"\x00\x00\x00\x01Bud1", "system_file"),
]


def _corrupt_png() -> bytes:
    data = bytearray(png(105))
    start = data.index(b"IDAT") + 10
    data[start : start + 10] = bytes(10)
    return bytes(data)


@pytest.mark.parametrize("container", ["zip", "tar.gz", "directory"])
def test_bad_files_are_dropped_with_their_reason_and_never_crash(tmp_path, container):
    bad = [(name, data if data is not None else _corrupt_png()) for name, data, _ in BAD_FILES]
    report, manifest, _ = ingest(tmp_path, write(container, tmp_path, kaggle_members(2) + bad))

    expected = {reason: 0 for reason in DROP_REASONS}
    for name, _, reason in BAD_FILES:
        expected[reason] += 1
        assert name in report["examples"][reason]
    assert report["dropped"] == {"total": len(BAD_FILES), **expected}
    assert report["kept"] == {"total": 4, "cat": 2, "dog": 2}
    assert report["files_seen"] == 4 + len(BAD_FILES)
    assert {row["source_path"] for row in manifest} == {name for name, _ in kaggle_members(2)}


def test_a_corrupt_zip_entry_is_dropped_as_unreadable(tmp_path):
    source = tmp_path / "source.zip"
    with zipfile.ZipFile(source, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in kaggle_members(1):
            archive.writestr(name, data)
    raw = bytearray(source.read_bytes())
    first_image = jpeg(0)
    at = raw.index(first_image) + len(first_image) // 2
    raw[at] ^= 0xFF  # the entry's CRC no longer matches
    source.write_bytes(bytes(raw))
    report, _, _ = ingest(tmp_path, source)
    assert report["dropped"]["unreadable_member"] == 1
    assert report["examples"]["unreadable_member"] == ["train/cat.0.jpg"]
    assert report["kept"]["total"] == 1


def _exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    return encode(Image.fromarray(pixels(7, size=(48, 40))), "JPEG", exif=exif)


COLOUR_MODES = {
    "cmyk.jpg": encode(Image.fromarray(pixels(1)).convert("CMYK"), "JPEG"),
    "grayscale.jpg": encode(Image.fromarray(pixels(2)).convert("L"), "JPEG"),
    "rgba.png": encode(Image.fromarray(np.dstack([pixels(3), pixels(4)[..., :1]])), "PNG"),
    "palette.png": encode(
        Image.fromarray(pixels(5)).convert("P", palette=Image.Palette.ADAPTIVE), "PNG", transparency=0
    ),
    "sixteen_bit.png": encode(Image.fromarray(pixels(6)[..., 0].astype(np.uint16) * 257), "PNG"),
    "exif_rotated.jpg": _exif_rotated_jpeg(),
}


def test_every_colour_mode_and_exif_rotation_survives_ingest(tmp_path):
    members = [(f"train/cats/{name}", data) for name, data in COLOUR_MODES.items()]
    report, manifest, _ = ingest(tmp_path, write_zip(tmp_path / "source.zip", members))
    assert report["kept"]["total"] == len(COLOUR_MODES)
    sizes = {Path(row["source_path"]).name: (int(row["width"]), int(row["height"])) for row in manifest}
    assert sizes["exif_rotated.jpg"] == (40, 48)  # upright size, not the stored 48x40
    assert sizes["cmyk.jpg"] == (40, 48)


def test_clean_zip_holds_original_bytes_under_content_addressed_names(tmp_path):
    members = [("train/cat.1.jpg", jpeg(1)), ("train/dog.2.jpg", png(2))]  # a PNG misnamed .jpg
    _, manifest, images_zip = ingest(tmp_path, write_zip(tmp_path / "source.zip", members))
    with zipfile.ZipFile(images_zip) as archive:
        infos = archive.infolist()
        assert [i.filename for i in infos] == sorted(row["path"] for row in manifest)
        assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        for _, data in members:
            sha = hashlib.sha256(data).hexdigest()
            (entry,) = [i.filename for i in infos if sha in i.filename]
            assert archive.read(entry) == data
    assert [row["path"] for row in manifest] == [
        f"cat/{hashlib.sha256(jpeg(1)).hexdigest()}.jpg",
        f"dog/{hashlib.sha256(png(2)).hexdigest()}.png",
    ]
    assert tuple(manifest[0]) == MANIFEST_COLUMNS


def test_byte_identical_duplicates_are_removed_and_reported(tmp_path):
    copy = jpeg(77)
    members = kaggle_members(2) + [
        ("train/cat.50.jpg", copy),
        ("extra/cats/cat-copy.jpg", copy),
        ("train/cat.51.jpg", copy),
    ]
    report, manifest, _ = ingest(tmp_path, write_zip(tmp_path / "source.zip", members))
    assert report["kept"] == {"total": 5, "cat": 3, "dog": 2}
    assert report["duplicates_removed"] == report["dropped"]["duplicate"] == 2
    # The copy with the smallest source path is kept, whatever the archive order.
    assert "extra/cats/cat-copy.jpg" in {row["source_path"] for row in manifest}
    assert report["examples"]["duplicate"] == ["train/cat.50.jpg", "train/cat.51.jpg"]


def test_same_bytes_under_both_labels_drops_every_copy(tmp_path):
    shared = jpeg(99)
    members = kaggle_members(2) + [("train/cat.99.jpg", shared), ("train/dog.99.jpg", shared), ("x/cats/y.jpg", shared)]
    report, manifest, _ = ingest(tmp_path, write_zip(tmp_path / "source.zip", members))
    assert report["dropped"]["conflicting_label"] == 3
    assert report["kept"] == {"total": 4, "cat": 2, "dog": 2}
    assert hashlib.sha256(shared).hexdigest() not in {row["sha256"] for row in manifest}


def test_outputs_are_byte_identical_whatever_the_archive_order_or_container(tmp_path):
    members = kaggle_members(5) + [("train/cat.0-copy.jpg", jpeg(0))]
    runs = []
    for i, (container, order) in enumerate([("zip", 1), ("zip", 2), ("tar.gz", 3)]):
        run_dir = tmp_path / str(i)
        run_dir.mkdir()
        report, _, images_zip = ingest(run_dir, write(container, run_dir, shuffled(members, order)))
        runs.append(
            (report["data_version"], images_zip.read_bytes(), (images_zip.parent / "manifest.csv").read_bytes())
        )
    assert runs[0] == runs[1] == runs[2]


def test_data_version_ignores_file_names_but_follows_labels(tmp_path):
    def version(members, name):
        run_dir = tmp_path / name
        run_dir.mkdir()
        return ingest(run_dir, write_zip(run_dir / "s.zip", members))[0]["data_version"]

    original = kaggle_members(3)
    renamed = [(f"PetImages/{'Cat' if 'cat' in n else 'Dog'}/{i}.jpg", d) for i, (n, d) in enumerate(original)]
    relabelled = [(n.replace("cat.0", "dog.900"), d) for n, d in original]
    assert version(original, "a") == version(renamed, "b") != version(relabelled, "c")


def test_parallel_screening_gives_the_same_result(tmp_path):
    members = kaggle_members(4) + [(name, data or _corrupt_png()) for name, data, _ in BAD_FILES]
    source = write_zip(tmp_path / "source.zip", members)
    reports = []
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        reports.append(
            run_ingest(
                data_params(source), raw_dir=out / "raw", clean_dir=out, report_path=out / "data.json", jobs=jobs
            )
        )
        reports[-1]["images_zip"] = (out / "images.zip").read_bytes()
    assert reports[0] == reports[1]


def test_a_source_without_usable_images_fails_naming_the_fix(tmp_path):
    source = write_zip(tmp_path / "source.zip", [("test1/1.jpg", jpeg(1)), ("notes.txt", b"x")])
    with pytest.raises(RuntimeError, match="name one of data.classes") as error:
        ingest(tmp_path, source)
    assert "pass Kaggle's train.zip (inside dogs-vs-cats.zip; not test1.zip, which is unlabelled)" in str(error.value)
    assert not (tmp_path / "out/clean/images.zip").exists()


def test_real_mini_dataset_has_500_cats_and_500_dogs(tmp_path):
    assert MINI_ZIP.exists(), f"{MINI_ZIP} is missing: the shared Kaggle mini set must sit next to the repo"
    report, manifest, _ = ingest(tmp_path, MINI_ZIP)
    assert report["kept"] == {"total": 1000, "cat": 500, "dog": 500}
    assert report["dropped"]["total"] == 0
    assert len({row["sha256"] for row in manifest}) == 1000
