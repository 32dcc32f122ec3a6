"""Where the real-photo archives live. Read in place; never copied into the repo.

Defaults to ../shared/data beside the checkout; CATSDOGS_SHARED_DATA points elsewhere
(GitHub CI downloads both archives there).
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA = Path(os.environ.get("CATSDOGS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MINI_ZIP = SHARED_DATA / "dogs-vs-cats-mini.zip"
FULL_ZIP = SHARED_DATA / "dogs-vs-cats-20k.zip"  # what the bundled model was trained and tested on
