"""Image folders, the train/val split, the assignment and the DataModule.

Imported lazily, so that protecting images (which only needs :mod:`.files`) does not load
Lightning and scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Assignment": "assignment",
    "fit_assignment": "assignment",
    "MoPDataModule": "datamodule",
    "IMAGE_EXTENSIONS": "files",
    "NoImagesError": "files",
    "list_images": "files",
    "read_rgb": "files",
    "split_files": "files",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
