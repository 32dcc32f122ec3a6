"""Where the real-photo archives live. Read in place; never copied into the repo.

Defaults to ../shared/data beside the checkout; CATSDOGS_SHARED_DATA points elsewhere
(GitHub CI downloads the mini archive there).
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA = Path(os.environ.get("CATSDOGS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MINI_ZIP = SHARED_DATA / "dogs-vs-cats-mini.zip"
