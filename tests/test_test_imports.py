"""Tests share helpers through tests/helpers/, never by importing another test module or a conftest.

A test module imported by another runs its module-level code twice under two names and ties the
two files together; a conftest imported as a module is a second copy of its fixtures.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers.paths import REPO


def is_test_module(path: Path) -> bool:
    return path.name == "conftest.py" or (path.name.startswith("test_") and path.suffix == ".py")


def imported_files(source: Path, root: Path) -> set[Path]:
    """The files under `root` that `source` imports, whether named as modules or as `from pkg import mod`."""
    names: set[str] = set()
    package = source.relative_to(root).parent.parts
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join((*base, *(node.module.split(".") if node.module else ())))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return {path for name in names if (path := root / (name.replace(".", "/") + ".py")).is_file()}


def imports_of_test_modules(root: Path) -> list[str]:
    """'importer -> imported' for every import of a test module or a conftest under root/tests."""
    return [
        f"{source.relative_to(root)} -> {target.relative_to(root)}"
        for source in sorted((root / "tests").rglob("*.py"))
        for target in sorted(imported_files(source, root))
        if is_test_module(target) and target != source
    ]


def test_no_test_file_imports_another_test_module_or_a_conftest() -> None:
    found = imports_of_test_modules(REPO)
    assert not found, "move what is shared into tests/helpers/ and import it from there:\n" + "\n".join(found)


def test_the_check_sees_absolute_relative_and_submodule_imports_of_test_modules(tmp_path: Path) -> None:
    files = {
        "tests/__init__.py": "",
        "tests/helpers/__init__.py": "",
        "tests/helpers/images.py": "",
        "tests/area/__init__.py": "",
        "tests/area/conftest.py": "",
        "tests/area/builders.py": "",
        "tests/area/test_a.py": "from tests.area.test_b import thing\nfrom tests.helpers.images import x\n",
        "tests/area/test_b.py": "from .conftest import fixture_value\nfrom .builders import build\n",
        "tests/area/test_c.py": "from tests.area import conftest\nimport tests.area.test_a\n",
        "tests/area/test_d.py": "from tests.helpers import images\nfrom . import builders\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert imports_of_test_modules(tmp_path) == [
        "tests/area/test_a.py -> tests/area/test_b.py",
        "tests/area/test_b.py -> tests/area/conftest.py",
        "tests/area/test_c.py -> tests/area/conftest.py",
        "tests/area/test_c.py -> tests/area/test_a.py",
    ]
