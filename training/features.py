"""Stage: a frozen ImageNet teacher's pooled features for every train and validation photo.

    python -m training.features IMAGES_ZIP SPLIT_CSV FEATURES   (dvc.yaml passes the paths)

One forward pass per photo through `teacher.variant` (EfficientNet-Lite2 by default, from its
pinned wheel), from the original bytes at `teacher.image_size`; with `teacher.flip`, averaged over
the photo and its mirror (twice the cost). The output is DVC-cached, so the audit stage and the
student never pay for the teacher again. The test split is not read: nothing chosen from these features has seen it.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from service.preprocessing import PreprocessSpec, preprocess
from training import efficientnet_lite
from training.atomic import atomic_path
from training.cli import run_stage, stage_parser
from training.dataset import LabelledImage, split_images
from training.errors import ParamsError
from training.params import TeacherParams, load_params

SPLITS = ("train", "val")

log = logging.getLogger("features")


def teacher_spec(cfg: TeacherParams) -> PreprocessSpec:
    return PreprocessSpec(cfg.image_size, efficientnet_lite.MEAN, efficientnet_lite.STD)


def load_teacher(cfg: TeacherParams) -> efficientnet_lite.EfficientNetLite:
    net = efficientnet_lite.EfficientNetLite(1000, dropout=0.0, name=cfg.variant)
    net.load_state_dict(efficientnet_lite.imagenet_state_dict(name=cfg.variant))
    return net.eval()


def pooled_features(
    net: efficientnet_lite.EfficientNetLite,
    images: list[LabelledImage],
    spec: PreprocessSpec,
    batch_size: int,
    flip: bool,
) -> np.ndarray:
    """(N, FEATURES) float32: each photo's pooled activations, or their mean with its mirror's when `flip`."""
    out = np.empty((len(images), efficientnet_lite.FEATURES), dtype=np.float32)
    with torch.inference_mode():
        for start in tqdm(range(0, len(images), batch_size), desc="teacher features", unit="batch"):
            chunk = images[start : start + batch_size]
            x = torch.from_numpy(np.concatenate([preprocess(image.data, spec) for image in chunk]))
            pooled = (net.pooled(x) + net.pooled(x.flip(3))) / 2 if flip else net.pooled(x)
            out[start : start + len(chunk)] = pooled.numpy()
    return out


def extract(cfg: TeacherParams, classes: Sequence[str], images_zip: Path, split_csv: Path, dest: Path) -> dict:
    """Write FEATURES (npz: path, label index, split, features) and return how long it took per photo."""
    by_split = {split: split_images(split, images_zip=images_zip, split_csv=split_csv) for split in SPLITS}
    images = [image for split in SPLITS for image in by_split[split]]
    if not images:
        raise ParamsError(f"{split_csv} has no train or validation photos; rerun the split stage")
    splits = np.array([split for split in SPLITS for _ in by_split[split]])
    torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    features = pooled_features(load_teacher(cfg), images, teacher_spec(cfg), cfg.batch_size, cfg.flip)
    seconds = time.perf_counter() - started
    with atomic_path(dest) as tmp, tmp.open("wb") as handle:
        np.savez(
            handle,
            path=np.array([image.path for image in images]),
            label=np.array([list(classes).index(image.label) for image in images], dtype=np.int64),
            split=splits,
            features=features,
            classes=np.array(classes),
        )
    return {"photos": len(images), "seconds": round(seconds, 1), "ms_per_photo": round(1000 * seconds / len(images), 1)}


def arguments() -> argparse.ArgumentParser:
    parser = stage_parser("training.features", __doc__)
    parser.add_argument("images_zip", type=Path, help="the kept images ingest wrote")
    parser.add_argument("split_csv", type=Path, help="the split assignment split wrote")
    parser.add_argument("features", type=Path, help="npz to write: the teacher's features for train and val")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    timing = extract(params.teacher, params.data.classes, args.images_zip, args.split_csv, args.features)
    log.info(
        "%s features of %d photos in %.0f s (%.1f ms each); wrote %s",
        params.teacher.variant,
        timing["photos"],
        timing["seconds"],
        timing["ms_per_photo"],
        args.features,
    )


if __name__ == "__main__":
    run_stage(main)
