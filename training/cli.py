"""The stages' command line, one mechanism for every stage.

dvc.yaml passes each stage its paths as arguments, so a path is written once, in dvc.yaml, and
`python -m <stage> --help` says what each one is. A mistake the user can fix (training/errors.py)
prints one `error:` line and exits 1; the traceback shows only with --debug or CATSDOGS_DEBUG=1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from training.errors import UserError

DEBUG_VARIABLE = "CATSDOGS_DEBUG"


def stage_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {module}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--debug", action="store_true", help=f"show the traceback of an error (or set {DEBUG_VARIABLE}=1)"
    )
    return parser


def debugging(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def run_stage(main: Callable[[], object]) -> None:
    """Run a stage's main() as `python -m` does, turning a UserError into one line and exit status 1."""
    try:
        main()
    except UserError as error:
        if debugging(sys.argv[1:]):
            raise
        sys.exit(f"error: {' '.join(str(error).split())}")
