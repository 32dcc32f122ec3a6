"""dvc.yaml cannot drift from the code: every module a stage imports is one of its deps, and every
path a stage reads or writes is passed in its `cmd` and declared as a dep or an out.

A module missing from `deps` lets `dvc repro` call a model current after the code that built it
changed; a path written both in dvc.yaml and in the code can differ between the two.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers.paths import REPO
from tests.helpers.pipeline import dvc_stages, stage_args, stage_module

PACKAGES = ("training", "export", "service")  # the repo's own code; anything else is a library
# How a run is recorded in MLflow never changes what a stage writes, so editing it must not rerun
# (retrain) the stages that log. Its own imports are still followed and must be deps.
LOGGING_ONLY = {"training/tracking.py"}
STAGES = sorted(dvc_stages())


def module_file(module: str) -> Path | None:
    """The repo file `module` names, or None for a library (or a name inside a module)."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = REPO / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement in `path` may load, anywhere in the file (function bodies too)."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}  # `from training import split`
    # `import training.split` also runs training/__init__.py
    return names | {".".join(name.split(".")[:i]) for name in names for i in range(1, name.count(".") + 1)}


def import_closure(module: str) -> set[str]:
    """Repo files (relative paths) that running `python -m module` imports, directly or not."""
    start = module_file(module)
    assert start is not None, f"{module} is not a module of this repo"
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += [f for name in imported_modules(path) if (f := module_file(name)) is not None]
    return {str(p.relative_to(REPO)) for p in seen if p.name != "__init__.py" or runs_code(p)}


def runs_code(init: Path) -> bool:
    """False for a package __init__ of only a docstring and constants (service's `__version__`): bumping
    it must not retrain. One that gains an import or a call becomes a dep like any module."""
    return any(
        not (isinstance(node, ast.Expr | ast.Assign) and isinstance(node.value, ast.Constant))
        for node in ast.parse(init.read_text()).body
    )


def declared(stage: str, key: str) -> set[str]:
    """The paths under `deps`, `outs` or `metrics` (entries with options are one-key mappings)."""
    entries = dvc_stages()[stage].get(key, [])
    return {entry if isinstance(entry, str) else next(iter(entry)) for entry in entries}


def is_code(path: str) -> bool:
    return path.endswith(".py")


@pytest.mark.parametrize("stage", STAGES)
def test_every_module_a_stage_imports_is_one_of_its_deps(stage: str) -> None:
    needed = import_closure(stage_module(stage)) - LOGGING_ONLY
    missing = sorted(needed - declared(stage, "deps"))
    assert not missing, f"dvc.yaml stage {stage!r} imports {missing} but does not list them under deps"


@pytest.mark.parametrize("stage", STAGES)
def test_every_code_dep_of_a_stage_is_a_module_it_imports(stage: str) -> None:
    """A stale code dep reruns the stage for nothing, and hides that the list is kept by hand."""
    closure = import_closure(stage_module(stage))
    stale = sorted(path for path in declared(stage, "deps") if is_code(path) and path not in closure)
    assert not stale, f"dvc.yaml stage {stage!r} lists {stale} under deps but never imports them"


@pytest.mark.parametrize("stage", STAGES)
def test_every_path_in_a_stage_command_is_a_dep_or_an_out(stage: str) -> None:
    args = stage_args(stage)
    assert args, f"stage {stage!r} passes no paths: its module would have to name them itself"
    undeclared = [
        arg for arg in args if arg not in declared(stage, "deps") | declared(stage, "outs") | declared(stage, "metrics")
    ]
    assert not undeclared, f"stage {stage!r} passes {undeclared} in its cmd, but they are neither deps nor outs"


@pytest.mark.parametrize("stage", STAGES)
def test_every_data_dep_and_out_of_a_stage_is_passed_in_its_command(stage: str) -> None:
    """The module reads and writes only what dvc.yaml hands it, so the code names no path of its own."""
    paths = {
        p for p in declared(stage, "deps") | declared(stage, "outs") | declared(stage, "metrics") if not is_code(p)
    }
    args = stage_args(stage)
    # A folder out is passed as itself; a file out inside a passed folder (data/clean/*) is written by name.
    unpassed = sorted(p for p in paths if p not in args and not any(p.startswith(f"{a}/") for a in args))
    assert not unpassed, f"stage {stage!r} declares {unpassed} but does not pass them in its cmd"


def test_no_stage_module_names_a_pipeline_path_itself() -> None:
    pipeline_paths = set()
    for stage in STAGES:
        pipeline_paths |= {p for p in declared(stage, "deps") | declared(stage, "outs") if not is_code(p)}
    offenders = []
    for stage in STAGES:
        for relative in sorted(import_closure(stage_module(stage)) - LOGGING_ONLY):
            tree = ast.parse((REPO / relative).read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and node.value in pipeline_paths:
                    offenders.append(f"{relative}:{node.lineno} {node.value!r}")
    assert not offenders, f"paths belong in dvc.yaml's cmd, not in the code: {sorted(set(offenders))}"


def test_the_closure_follows_imports_inside_the_repo_only() -> None:
    """The scan itself: train reaches split through prepare, and no library file is ever listed."""
    closure = import_closure("training.train")
    assert {"training/train.py", "training/prepare.py", "training/split.py", "service/preprocessing.py"} <= closure
    assert all(path.split("/")[0] in PACKAGES for path in closure)
    assert "training/ingest.py" not in closure


def test_logging_only_modules_are_really_imported_by_some_stage() -> None:
    """An allow-list entry nothing imports would be a hole left open for no reason."""
    imported = set().union(*(import_closure(stage_module(stage)) for stage in STAGES))
    assert LOGGING_ONLY <= imported
