"""Where the repository and the real-photo archives live.

The archives are read in place, never copied into the repo. They default to ../shared/data beside
the checkout; CATSDOGS_SHARED_DATA points elsewhere (GitHub CI downloads both archives there).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("CATSDOGS_SHARED_DATA", REPO.parent / "shared" / "data"))
MINI_ZIP = SHARED_DATA / "dogs-vs-cats-mini.zip"
FULL_ZIP = SHARED_DATA / "dogs-vs-cats-20k.zip"  # what the bundled model was trained and tested on


def load_yaml(path: Path) -> Any:
    with open(path) as fh:
        return yaml.safe_load(fh)
