"""The README's quickstart and docs/pipeline.md's experiment workflow, run as written in a throwaway
copy of the repo laid out as the docs assume: the shared archives at ../shared/data, the venvs beside.

The quickstart's experiment (the mini archive, 2 epochs, 96 px, `--temp`) finishes with exit 0
whatever the int8 guard decides, logs one MLflow run named after it, and leaves what `make serve`
serves (models/model.onnx) byte-identical until the user promotes it with `dvc exp apply`. The
rollback section then holds in a fresh clone: the served model from Git alone, the whole pipeline
state from a DVC remote.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest

from service.metadata import ModelMetadata
from tests.helpers.commands import copy_working_tree, run_checked
from tests.helpers.network import free_port, wait_for_200
from tests.helpers.paths import MINI_ZIP, REPO, SHARED_DATA

pytestmark = pytest.mark.slow

README = (REPO / "README.md").read_text()
PIPELINE_DOC = (REPO / "docs" / "pipeline.md").read_text()
EXPERIMENT = "mini"  # the quickstart's `-n`
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


def readme_command(prefix: str, text: str = README) -> str:
    """The one line of a fenced block in `text` that starts with `prefix`, without its trailing comment."""
    lines = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()]
    (line,) = [line for line in lines if line.startswith(prefix)]
    return line.split("  #")[0].strip()


def _experiment_file(cwd: Path, name: str, path: str) -> str:
    """A file as the experiment `name` committed it (DVC keeps its commit under refs/exps)."""
    refs = _run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd).split()
    ref = next(ref for ref in refs if ref.endswith(f"/{name}"))
    return _run(["git", "show", f"{ref}:{path}"], cwd)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working tree committed in a fresh git repo (the bundled model, its dvc.lock, no DVC cache), with
    ../shared/data and the two venvs where a checkout of this project has them, so the docs run as written."""
    assert MINI_ZIP.exists(), f"{MINI_ZIP} is missing: the experiment reads the shared mini archive in place"
    work = tmp_path_factory.mktemp("quickstart") / "repo"
    work.mkdir()
    (work.parent / "shared").mkdir()
    (work.parent / "shared" / "data").symlink_to(SHARED_DATA)
    copy_working_tree(work)
    built = (REPO / ".venv-serve" / ".built").stat().st_mtime
    for prerequisite in ("requirements/serve.lock", "scripts/build_serve_venv.sh"):  # make serve builds nothing
        os.utime(work / prerequisite, (built - 1, built - 1))
    _run(["git", "init", "-q"], work)
    _run(["git", "add", "-A"], work)
    _run(["git", "commit", "-qm", "bundled model"], work)
    for venv in (Path(sys.executable).parent.parent, REPO / ".venv-serve"):
        (work / venv.name).symlink_to(venv.resolve())  # .gitignore's `.venv/` matches folders, not links
        with (work / ".git" / "info" / "exclude").open("a") as exclude:
            exclude.write(f"/{venv.name}\n")
    return work


@dataclass(frozen=True)
class Experiment:
    served_before: dict[str, bytes]  # SERVED's bytes before the experiment ran
    output: str  # what `dvc exp run` printed, the stages' own lines included


@pytest.fixture(scope="module")
def experiment(clone: Path) -> Experiment:
    """The README's quickstart experiment, as written."""
    before = {name: (clone / name).read_bytes() for name in SERVED}
    command = readme_command(f"dvc exp run --temp -n {EXPERIMENT} ")
    for setting in ("data.source=../shared/data/dogs-vs-cats-mini.zip", "train.epochs=2", "preprocess.image_size=96"):
        assert f"-S {setting}" in command, command  # the shrunk experiment of issue #26
    started = time.perf_counter()
    out = _sh(command, clone)
    print(f"the quickstart experiment took {time.perf_counter() - started:.0f} s")
    assert f"Ran experiment(s): {EXPERIMENT}" in out, out
    return Experiment(before, out)


def test_temp_experiment_leaves_the_served_model_byte_identical(clone: Path, experiment: Experiment) -> None:
    for name, data in experiment.served_before.items():
        assert (clone / name).read_bytes() == data, f"{name} changed"
    assert _run(["git", "status", "--porcelain"], clone) == ""


def test_the_experiment_logs_one_finished_mlflow_run_named_after_it(clone: Path, experiment: Experiment) -> None:
    with sqlite3.connect(clone / "mlflow.db") as store:
        runs = store.execute(
            "SELECT runs.name, runs.status FROM runs JOIN tags ON tags.run_uuid = runs.run_uuid"
            " WHERE tags.key = 'dvc_experiment' AND tags.value = ?",
            (EXPERIMENT,),
        ).fetchall()
    assert len(runs) == 1, runs
    ((name, status),) = runs
    assert re.fullmatch(rf"{EXPERIMENT}-\d{{8}}-\d{{6}}", name) and status == "FINISHED", runs


def test_the_guards_verdict_is_told_alike_by_report_metrics_mlflow_and_the_console(
    clone: Path, experiment: Experiment
) -> None:
    """Whichever file the int8 guard lets through on 100 validation photos, every record names the same one."""
    report = json.loads(_experiment_file(clone, EXPERIMENT, "reports/quantize.json"))
    metrics = json.loads(_experiment_file(clone, EXPERIMENT, "models/metrics.json"))
    assert report["guard"]["images"] == 100 and metrics["format"] == report["served"]
    with sqlite3.connect(clone / "mlflow.db") as store:
        (served,) = store.execute(
            "SELECT value FROM tags WHERE key = 'served_format' AND run_uuid IN"
            " (SELECT run_uuid FROM tags WHERE key = 'dvc_experiment' AND value = ?)",
            (EXPERIMENT,),
        ).fetchone()
    assert served == report["served"]
    warnings = [line for line in experiment.output.splitlines() if "guard refused int8" in line]
    assert len(warnings) == (report["served"] == "fp32"), warnings
    print(f"int8 guard on the quickstart experiment: {report['guard']}")


def test_quickstart_compares_the_experiment_with_metrics_diff_and_make_exps(
    clone: Path, experiment: Experiment
) -> None:
    diff = _sh(readme_command("dvc metrics diff HEAD "), clone)
    assert "models/metrics.json" in diff and "accuracy" in diff, diff
    shown = _sh(readme_command("make exps"), clone, COLUMNS="120")
    print(shown)
    lines = shown.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.strip().startswith("─")) :]  # after make's echo
    assert max(len(line) for line in table) <= 120, shown
    header = next(line for line in table if line.split()[:1] == ["Experiment"])
    for column in ("accuracy", "train.epochs", "preprocess.image_size"):
        assert column in header, header
    assert "data/clean" not in shown and "…" not in header, shown  # no dependency hashes, nothing folded
    row = next(line for line in lines if f"[{EXPERIMENT}]" in line.split())
    assert "2" in row.split() and "96" in row.split(), row


@pytest.fixture
def served(clone: Path, tmp_path: Path) -> Iterator[int]:
    """The README's `make serve`, on the free port its PORT note offers; yields the port."""
    port = free_port()
    outer = {"MODEL_PATH", "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES"}
    env = {k: v for k, v in os.environ.items() if k not in outer} | {"PORT": str(port)}
    assert readme_command("make serve") == "make serve" and "PORT=9000 make serve" in README
    log = tmp_path / "make-serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["make", "serve"], cwd=clone, env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        wait_for_200(f"http://127.0.0.1:{port}/ready", proc, log, within_s=60, poll_s=0.2)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_quickstart_curl_gets_the_answer_the_readme_shows(clone: Path, served: int) -> None:
    command = readme_command("curl -F file=@deploy/samples/cat.jpg ")
    curl = subprocess.run(
        ["sh", "-c", command.replace("localhost:8000", f"localhost:{served}")],
        cwd=clone,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    body = json.loads(curl.stdout)  # curl's progress meter goes to stderr
    shown = re.search(r"^# (\{\"predicted_class\".*)$", README, re.M)
    assert shown, "the README shows the curl's answer on the line after it"
    expected = json.loads(shown[1].replace(",…}", "}"))
    rounded = {key: round(value, 3) for key, value in body["probabilities"].items()}
    assert (body["predicted_class"], round(body["confidence"], 3), rounded, body["model_version"]) == (
        expected["predicted_class"],
        expected["confidence"],
        expected["probabilities"],
        expected["model_version"],
    )


def test_docs_tilde_source_for_kaggles_competition_zip_runs_as_written(clone: Path, tmp_path: Path) -> None:
    """docs/pipeline.md's `-S "data.source='~/Downloads/dogs-vs-cats.zip'"` through DVC's -S parser, ingest only."""
    home = tmp_path / "home"
    _kaggle_download(home / "Downloads")
    command = readme_command("dvc exp run --temp -S \"data.source='~/Downloads/dogs-vs-cats.zip'\"", PIPELINE_DOC)
    out = _sh(f"{command} -n kaggle ingest", clone, HOME=str(home))
    assert "using train.zip, the labelled archive inside data.source" in out, out
    report = json.loads(_experiment_file(clone, "kaggle", "reports/data.json"))
    assert report["kept"]["total"] == report["files_seen"] > 0
    assert report["source"]["path"] == str(home / "Downloads/dogs-vs-cats.zip")
    assert report["source"]["inner"] == "train.zip" and "test1.zip" in report["source"]["skipped"]
    _dvc("exp", "remove", "kaggle", cwd=clone)


def test_experiment_is_compared_with_exp_show_and_metrics_diff(clone: Path, experiment: Experiment) -> None:
    shown = json.loads(_dvc("exp", "show", "--json", cwd=clone))
    names = [exp["name"] for baseline in shown for exp in baseline.get("experiments") or []]
    assert EXPERIMENT in names, shown
    diff = json.loads(_dvc("metrics", "diff", "HEAD", EXPERIMENT, "--json", cwd=clone))
    accuracy = diff["models/metrics.json"]["accuracy"]
    print(f"test accuracy, bundled vs the quickstart experiment: {accuracy}")
    assert accuracy["old"] > 0.98 > accuracy["new"] > 0.6, accuracy  # the bundled model vs 2 epochs at 96 px


@pytest.fixture(scope="module")
def promoted(clone: Path, experiment: Experiment) -> tuple[str, str]:
    """The README's promotion, committed; returns (bundled commit, promoted commit)."""
    bundled = _head(clone)
    _dvc("exp", "apply", EXPERIMENT, cwd=clone)
    _sh(f'git add params.yaml dvc.lock models/ reports/ && git commit -m "Promote experiment {EXPERIMENT}"', clone)
    return bundled, _head(clone)


def test_exp_apply_promotes_the_experiment_and_exp_remove_discards_it(clone: Path, promoted: tuple[str, str]) -> None:
    proto = onnx.load(str(clone / "models/model.onnx"))
    metadata = ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    assert metadata.preprocessing.image_size == 96
    assert "models/model.onnx" in _run(["git", "show", "--name-only", "--format=", promoted[1]], clone)
    _dvc("exp", "remove", EXPERIMENT, cwd=clone)
    assert EXPERIMENT not in _dvc("exp", "list", cwd=clone).split()


def test_fresh_clone_rolls_back_the_model_from_git_and_the_pipeline_state_from_a_dvc_remote(
    clone: Path, experiment: Experiment, promoted: tuple[str, str], tmp_path: Path
) -> None:
    bundled, promotion = promoted
    _sh(f"dvc remote add -d storage {tmp_path / 'dvc-remote'}", clone)
    _sh('git add .dvc/config && git commit -m "DVC remote"', clone)
    _sh("dvc push", clone)
    fresh = tmp_path / "fresh"
    _run(["git", "clone", "-q", str(clone), str(fresh)], tmp_path)
    assert not (fresh / ".dvc/cache").exists()

    _sh(f"git checkout {bundled} -- models/model.onnx models/metrics.json", fresh)
    assert (fresh / "models/model.onnx").read_bytes() == experiment.served_before["models/model.onnx"]

    restore = "dvc.lock params.yaml reports models/model.onnx models/metrics.json"
    _sh(f"git checkout {promotion} -- {restore} && dvc pull", fresh)
    for name in ("models/model.onnx", "models/best_model.pth", "data/clean/images.zip", "data/split.csv"):
        assert (fresh / name).read_bytes() == (clone / name).read_bytes(), name
