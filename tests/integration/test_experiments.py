"""The README's experiment workflow, run as a user would in a throwaway copy of the repo.

`dvc exp run --temp` trains elsewhere, so what `make serve` serves (models/model.onnx) stays
byte-identical until the user promotes the experiment with `dvc exp apply`. The rollback
section then holds in a fresh clone: the served model from Git alone, the whole pipeline state
from a DVC remote.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

import onnx
import pytest

from service.metadata import ModelMetadata
from tests.helpers.commands import copy_working_tree, run_checked
from tests.helpers.paths import MINI_ZIP, REPO

pytestmark = pytest.mark.slow

# The smallest recipe that still runs every stage: a from-scratch cnn at 32 px for one epoch.
TINY = (
    "preprocess.image_size=32",
    "model.arch=cnn",
    "model.pretrained=false",
    "model.frozen_blocks=0",
    "model.width=8",
    "train.epochs=1",
    "train.max_train_images=128",
    "train.crop_size=null",
    "train.threads=2",
    "export.parity_images=16",
    "quantize.enabled=false",
)
# What serving and the committed pipeline state are made of.
SERVED = ("models/model.onnx", "models/metrics.json", "params.yaml", "dvc.lock")
# So the README's `git commit` lines run as written.
IDENTITY = {f"GIT_{who}_{what}": "t" for who in ("AUTHOR", "COMMITTER") for what in ("NAME", "EMAIL")}


def _run(args: list[str], cwd: Path, **extra_env: str) -> str:
    # Generous: on two shared cores every dvc call pays seconds of start-up, the pipeline minutes.
    return run_checked(args, cwd, timeout=1800, **IDENTITY, **extra_env)


def _dvc(*args: str, cwd: Path) -> str:
    return _run([sys.executable, "-m", "dvc", *args], cwd)


def _sh(command: str, cwd: Path, **extra_env: str) -> str:
    """A README line, run as written."""
    return _run(["sh", "-c", command], cwd, **extra_env)


def _kaggle_download(dest: Path) -> Path:
    """dogs-vs-cats.zip as Kaggle serves it, from 6 of the mini archive's photos: train.zip + test1.zip."""
    with zipfile.ZipFile(MINI_ZIP) as mini:
        photos = {name: mini.read(name) for name in (f"train/{c}.{i}.jpg" for c in ("cat", "dog") for i in (1, 2, 3))}
    dest.mkdir(parents=True)
    with zipfile.ZipFile(dest / "train.zip", "w") as train:
        for name, data in photos.items():
            train.writestr(name, data)
    with zipfile.ZipFile(dest / "test1.zip", "w") as test1:
        for i, data in enumerate(photos.values(), start=1):
            test1.writestr(f"test1/{i}.jpg", data)
    with zipfile.ZipFile(dest / "dogs-vs-cats.zip", "w") as outer:
        outer.write(dest / "train.zip", "train.zip")
        outer.write(dest / "test1.zip", "test1.zip")
        outer.writestr("sampleSubmission.csv", "id,label\n")
    return dest / "dogs-vs-cats.zip"


def _head(cwd: Path) -> str:
    return _run(["git", "rev-parse", "HEAD"], cwd).strip()


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working tree, committed in a fresh git repo: the bundled model, its dvc.lock, no DVC cache."""
    assert MINI_ZIP.exists(), f"{MINI_ZIP} is missing: the experiment reads the shared mini archive in place"
    work = tmp_path_factory.mktemp("clone")
    copy_working_tree(work)
    _run(["git", "init", "-q"], work)
    _run(["git", "add", "-A"], work)
    _run(["git", "commit", "-qm", "bundled model"], work)
    return work


@pytest.fixture(scope="module")
def experiment(clone: Path) -> dict[str, bytes]:
    """`dvc exp run --temp` on a RELATIVE data.source; returns the served files' bytes from before it."""
    before = {name: (clone / name).read_bytes() for name in SERVED}
    mini = os.path.relpath(MINI_ZIP, clone)  # like ../shared/data/dogs-vs-cats-mini.zip: not beside the temp copy
    sets = [arg for setting in (f"data.source={mini}", *TINY) for arg in ("-S", setting)]
    out = _dvc("exp", "run", "--temp", "-n", "tiny", *sets, cwd=clone)
    assert "Ran experiment(s): tiny" in out, out
    return before


def test_temp_experiment_leaves_the_served_model_byte_identical(clone: Path, experiment: dict[str, bytes]) -> None:
    for name, data in experiment.items():
        assert (clone / name).read_bytes() == data, f"{name} changed"
    assert _run(["git", "status", "--porcelain"], clone) == ""


def test_readme_tilde_source_for_kaggles_competition_zip_runs_as_written(clone: Path, tmp_path: Path) -> None:
    """The README's `-S "data.source='~/Downloads/dogs-vs-cats.zip'"`, through DVC's real -S parser, ingest only."""
    home = tmp_path / "home"
    _kaggle_download(home / "Downloads")
    readme = "dvc exp run --temp -S \"data.source='~/Downloads/dogs-vs-cats.zip'\""
    assert readme in (REPO / "README.md").read_text()
    out = _sh(f"{readme} -n kaggle ingest", clone, HOME=str(home))
    assert "using train.zip, the labelled archive inside data.source" in out, out
    refs = _run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], clone).split()
    ref = next(ref for ref in refs if ref.endswith("/kaggle"))  # where DVC keeps the experiment's commit
    report = json.loads(_run(["git", "show", f"{ref}:reports/data.json"], clone))
    assert report["kept"]["total"] == report["files_seen"] > 0
    assert report["source"]["path"] == str(home / "Downloads/dogs-vs-cats.zip")
    assert report["source"]["inner"] == "train.zip" and "test1.zip" in report["source"]["skipped"]
    _dvc("exp", "remove", "kaggle", cwd=clone)


def test_experiment_is_compared_with_exp_show_and_metrics_diff(clone: Path, experiment: dict[str, bytes]) -> None:
    shown = json.loads(_dvc("exp", "show", "--json", cwd=clone))
    names = [exp["name"] for baseline in shown for exp in baseline.get("experiments") or []]
    assert "tiny" in names, shown
    diff = json.loads(_dvc("metrics", "diff", "HEAD", "tiny", "--json", cwd=clone))
    accuracy = diff["models/metrics.json"]["accuracy"]
    assert accuracy["old"] > 0.9 > accuracy["new"], accuracy  # the bundled model vs one epoch at 32 px


@pytest.fixture(scope="module")
def promoted(clone: Path, experiment: dict[str, bytes]) -> tuple[str, str]:
    """The README's promotion, committed; returns (bundled commit, promoted commit)."""
    bundled = _head(clone)
    _dvc("exp", "apply", "tiny", cwd=clone)
    _sh('git add params.yaml dvc.lock models/ reports/ && git commit -m "Promote experiment tiny"', clone)
    return bundled, _head(clone)


def test_exp_apply_promotes_the_experiment_and_exp_remove_discards_it(clone: Path, promoted: tuple[str, str]) -> None:
    proto = onnx.load(str(clone / "models/model.onnx"))
    metadata = ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    assert metadata.preprocessing.image_size == 32
    assert "models/model.onnx" in _run(["git", "show", "--name-only", "--format=", promoted[1]], clone)
    _dvc("exp", "remove", "tiny", cwd=clone)
    assert "tiny" not in _dvc("exp", "list", cwd=clone)


def test_fresh_clone_rolls_back_the_model_from_git_and_the_pipeline_state_from_a_dvc_remote(
    clone: Path, experiment: dict[str, bytes], promoted: tuple[str, str], tmp_path: Path
) -> None:
    bundled, promotion = promoted
    _sh(f"dvc remote add -d storage {tmp_path / 'dvc-remote'}", clone)
    _sh('git add .dvc/config && git commit -m "DVC remote"', clone)
    _sh("dvc push", clone)
    fresh = tmp_path / "fresh"
    _run(["git", "clone", "-q", str(clone), str(fresh)], tmp_path)
    assert not (fresh / ".dvc/cache").exists()

    _sh(f"git checkout {bundled} -- models/model.onnx models/metrics.json", fresh)
    assert (fresh / "models/model.onnx").read_bytes() == experiment["models/model.onnx"]

    restore = "dvc.lock params.yaml reports models/model.onnx models/metrics.json"
    _sh(f"git checkout {promotion} -- {restore} && dvc pull", fresh)
    for name in ("models/model.onnx", "models/best_model.pth", "data/clean/images.zip", "data/split.csv"):
        assert (fresh / name).read_bytes() == (clone / name).read_bytes(), name
