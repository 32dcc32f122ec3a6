"""Labels from archive paths, for the dataset layouts people actually download.

    Kaggle train.zip         train/cat.0.jpg, train/dog.0.jpg (also cat.0.jpg at the root)
    Microsoft PetImages      PetImages/Cat/0.jpg, PetImages/Dog/0.jpg
    class folders            train/cats/x.jpg, test/dogs/y.jpg, cat/z.jpg (any depth)

A class matches its name or plural, case-insensitively ("Cat", "cats", "DOGS").
The file-name prefix (Kaggle) and the nearest class-named folder are both
consulted; when they disagree (cats/dog.1.jpg) the file is unlabelled rather
than guessed. Upstream train/ and test/ folders are pooled: the split stage
makes its own, leak-free split.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

# Files that operating systems and archivers add next to images. They are skipped
# without decoding and counted under "system_file" so the report still adds up.
_SYSTEM_NAMES = {".ds_store", "thumbs.db", "desktop.ini", "ehthumbs.db"}
_SYSTEM_DIRS = {"__macosx", ".git", ".svn"}

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


def is_system_file(path: str) -> bool:
    parts = PurePosixPath(path).parts
    name = parts[-1].lower()
    return (
        name in _SYSTEM_NAMES
        or name.startswith("._")  # macOS AppleDouble resource forks
        or any(part.lower() in _SYSTEM_DIRS for part in parts[:-1])
    )


def _class_for_token(token: str, classes: Sequence[str]) -> str | None:
    token = token.lower()
    for cls in classes:
        if token in (cls.lower(), f"{cls.lower()}s"):
            return cls
    return None


def label_from_path(path: str, classes: Sequence[str]) -> str | None:
    """The class named by `path`, or None when it names none or contradicts itself."""
    parts = PurePosixPath(path).parts
    from_name = _class_for_token(parts[-1].split(".")[0], classes) if "." in parts[-1] else None
    from_folder = next((cls for part in reversed(parts[:-1]) if (cls := _class_for_token(part, classes))), None)
    if from_name and from_folder and from_name != from_folder:
        return None
    return from_name or from_folder
