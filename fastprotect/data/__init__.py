"""Image folders, the train/val split, the assignment and the DataModule."""

from .assignment import Assignment, fit_assignment
from .datamodule import MoPDataModule
from .files import IMAGE_EXTENSIONS, NoImagesError, list_images, read_rgb, split_files

__all__ = [
    "Assignment",
    "IMAGE_EXTENSIONS",
    "MoPDataModule",
    "NoImagesError",
    "fit_assignment",
    "list_images",
    "read_rgb",
    "split_files",
]
