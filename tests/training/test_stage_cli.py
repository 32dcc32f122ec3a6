"""Every stage answers --help without doing any work, and a user's mistake reads as one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.paths import REPO
from tests.helpers.pipeline import dvc_stages, stage_command, stage_module
from tests.training.builders import jpeg, write_zip
from training import cli
from training.errors import ParamsError

STAGES = sorted(dvc_stages())


def _run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        env=os.environ | {"PYTHONPATH": str(REPO)} | env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow  # a Python process per case, importing torch
@pytest.mark.parametrize("stage", STAGES)
def test_help_prints_usage_exits_0_and_writes_nothing(stage: str, tmp_path: Path) -> None:
    module = stage_module(stage)
    result = _run([sys.executable, "-m", module, "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m {module} "), result.stdout[:200]
    assert "--debug" in result.stdout
    assert list(tmp_path.iterdir()) == [], "--help must not run the stage"


@pytest.fixture
def unlabelled_source(tmp_path: Path) -> Path:
    """A working directory whose data.source is Kaggle's test1.zip: photos with no class in their names."""
    source = write_zip(tmp_path / "test1.zip", [(f"test1/{i}.jpg", jpeg(i)) for i in range(1, 5)])
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"] |= {"source": str(source), "sha256": None}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


@pytest.mark.slow  # a Python process per case, importing torch
def test_an_unlabelled_source_fails_ingest_with_one_line_that_names_the_fix(unlabelled_source: Path) -> None:
    result = _run(stage_command("ingest"), unlabelled_source)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = _error_lines(result)
    assert line.startswith("error: no usable images in ")
    assert "not test1.zip, which is unlabelled" in line


@pytest.mark.slow  # a Python process per case, importing torch
def test_the_debug_switch_shows_the_traceback(unlabelled_source: Path) -> None:
    for result in (
        _run([*stage_command("ingest"), "--debug"], unlabelled_source),
        _run(stage_command("ingest"), unlabelled_source, CATSDOGS_DEBUG="1"),
    ):
        assert result.returncode == 1
        assert "Traceback" in result.stderr and "SourceError: no usable images" in result.stderr
        assert not _error_lines(result)


@pytest.mark.slow  # a Python process per case, importing torch
def test_a_missing_input_names_the_stage_to_run(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    result = _run(stage_command("prepare"), tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert _error_lines(result) == ["error: data/split.csv is missing; run `dvc repro split` first"]


def test_a_bug_still_shows_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the user's mistakes are shortened: anything else keeps the traceback that finds the bug."""
    monkeypatch.setattr(sys, "argv", ["stage"])

    def broken() -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        cli.run_stage(broken)


def test_a_user_error_becomes_exit_status_1_and_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["stage"])
    monkeypatch.delenv(cli.DEBUG_VARIABLE, raising=False)

    def mistaken() -> None:
        raise ParamsError("train.batch_size 64 must divide by the 3 processes;\n  set it to 63")

    with pytest.raises(SystemExit) as exit_info:
        cli.run_stage(mistaken)
    assert exit_info.value.code == "error: train.batch_size 64 must divide by the 3 processes; set it to 63"
