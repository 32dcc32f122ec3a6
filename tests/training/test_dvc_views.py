"""What a user sees from `dvc metrics show`, `dvc exp show` and `dvc plots show` in a copy of this repo.

The commands read the committed reports, as they do in a fresh clone; no stage runs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.plots_template import TEMPLATE, render
from tests.helpers.commands import copy_working_tree, venv_env

WIDTH = 120
INTENDED_PLOTS = ["Accuracy", "Confusion_matrix", "Loss", "ROC", "Reliability"]  # dvc.yaml's top-level plots


def _git(args: list[str], cwd: Path) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout


def _dvc(repo: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=repo,
        env=venv_env(COLUMNS=str(WIDTH)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files a clone would have, committed to a fresh git repo (`dvc exp show` reads git history)."""
    work = tmp_path_factory.mktemp("clone")
    copy_working_tree(work)
    _git(["init", "-q"], work)
    _git(["add", "-A"], work)
    _git(["commit", "-qm", "clone"], work)
    return work


def test_dvc_metrics_show_is_one_row_of_the_figures_that_decide_between_models(repo: Path) -> None:
    header, row = _dvc(repo, "metrics", "show").splitlines()
    assert header.split() == [
        "Path",
        "accuracy",
        "cat_accuracy",
        "dog_accuracy",
        "ece",
        "ece_before",
        "format",
        "log_loss",
        "log_loss_before",
        "model_mb",
        "roc_auc",
        "temperature",
        "val_accuracy",
    ]
    assert row.split()[0] == "models/metrics.json"


# What `dvc status` may say about a clone: the data and cached models are not in it, nothing else.
ABSENT = {"deleted", "not in cache"}


def test_a_fresh_clones_dvc_status_lists_no_changed_code_params_or_commands(repo: Path) -> None:
    """dvc.lock describes the committed code: the bundled model was built by exactly this pipeline."""
    stale = []
    for stage, changes in json.loads(_dvc(repo, "status", "--json")).items():
        for change in changes:
            if isinstance(change, str):  # "changed command"
                stale.append(f"{stage}: {change}")
                continue
            for kind, paths in change.items():
                if kind == "changed params":
                    stale += [f"{stage}: param {name} {state}" for name, state in paths.items()]
                else:
                    stale += [f"{stage}: {path} {state}" for path, state in paths.items() if state not in ABSENT]
    assert not stale, (
        "dvc.lock does not match the committed pipeline; run `dvc repro` and commit dvc.lock with its "
        "outputs (models/, reports/):\n" + "\n".join(stale)
    )


def test_dvc_plots_show_renders_exactly_the_intended_plots_without_a_cdn(repo: Path) -> None:
    _dvc(repo, "plots", "show")
    page = (repo / "dvc_plots" / "index.html").read_text()
    assert sorted(re.findall(r'<div id = "([^"]+)">', page)) == INTENDED_PLOTS
    assert "<script src" not in page and "cdn." not in page
    assert "window.vegaEmbed=" in page  # the libraries are in the page itself
    assert _git(["status", "--porcelain", "dvc_plots"], repo) == "", "dvc_plots/ must be git-ignored"


def test_plots_template_holds_the_pinned_vega_bundle() -> None:
    assert TEMPLATE.read_text(encoding="utf8") == render(), "run `python scripts/plots_template.py`"


def test_confusion_matrix_shows_each_actual_class_as_shares_on_one_scale_per_revision(repo: Path) -> None:
    """`dvc plots diff` of a 100-photo experiment beside the 2,000-photo model: shares, not counts, on 0-1."""
    spec = json.loads(_dvc(repo, "plots", "show", "--json"))["data"]["Confusion matrix"][0]["content"]
    assert spec["facet"]["column"]["field"] == "rev"  # one matrix per revision
    assert spec["spec"]["encoding"]["y"]["field"] == "actual"
    (share,) = [t for t in spec["spec"]["transform"] if t.get("as") == "percent_of_y"]
    assert share["calculate"] == "datum.xy_count / datum.sum_y"  # a row, one actual class, sums to 1
    assert spec["spec"]["layer"][0]["encoding"]["color"]["scale"] == {"domain": [0, 1]}


def test_make_exps_shows_each_experiments_name_test_accuracy_and_changed_params_in_120_columns(repo: Path) -> None:
    """An experiment as `dvc exp run` records it (a commit under refs/exps on the baseline), made by hand."""
    baseline = _git(["rev-parse", "HEAD"], repo).strip()
    params = (repo / "params.yaml").read_text()
    metrics = json.loads((repo / "models/metrics.json").read_text())
    changed = {"source: ../shared/data/dogs-vs-cats-20k.zip": "source: ../shared/data/dogs-vs-cats-mini.zip"}
    changed |= {"image_size: 176": "image_size: 96", "epochs: 11": "epochs: 2"}
    for old, new in changed.items():
        assert old in params, old
        params = params.replace(old, new)
    (repo / "params.yaml").write_text(params)
    (repo / "models/metrics.json").write_text(json.dumps(metrics | {"accuracy": 0.88, "val_accuracy": 0.87}))
    _git(["add", "params.yaml", "models/metrics.json"], repo)
    tree = _git(["write-tree"], repo).strip()
    commit = _git(["commit-tree", tree, "-p", baseline, "-m", "dotal-moot"], repo).strip()
    _git(["reset", "-q", "--hard"], repo)
    ref = f"refs/exps/{baseline[:2]}/{baseline[2:]}/dotal-moot"
    _git(["update-ref", ref, commit], repo)
    try:
        env = venv_env(COLUMNS=str(WIDTH))
        for outer in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES"):  # an outer `make test`'s own lines
            env.pop(outer, None)
        shown = subprocess.run(
            ["make", "-s", "exps", f"DVC={sys.executable} -m dvc"], cwd=repo, env=env, capture_output=True, text=True
        ).stdout
    finally:
        _git(["update-ref", "-d", ref], repo)
    lines = shown.splitlines()
    assert lines and max(len(line) for line in lines) <= WIDTH, shown
    header = next(line for line in lines if "Experiment" in line)
    assert header.split() == ["Experiment", "accuracy", "data.source", "preprocess.image_size", "train.epochs"], shown
    row = next(line for line in lines if "[dotal-moot]" in line).split()
    assert row[-4:] == ["0.88", "../shared/data/dogs-vs-cats-mini.zip", "96", "2"], shown
