"""Finding, splitting and reading image files."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from ..errors import NoImagesError  # noqa: F401 (re-exported)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def is_hidden(rel: Path) -> bool:
    """Whether a folder scan skips this path (relative to the scanned folder): hidden files
    and folders (``.name``) and macOS's ``__MACOSX``, which unzipping leaves."""
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.parts)


def list_images(dirs: Sequence[str | Path]) -> list[Path]:
    """All image files under ``dirs`` (recursive, by extension, case-insensitive), sorted;
    hidden files and folders and ``__MACOSX`` skipped, as ``protect`` skips them (a
    notebook's ``.ipynb_checkpoints`` copies would otherwise train or validate twice)."""
    found: set[Path] = set()
    for d in dirs:
        p = Path(d).expanduser()
        if p.is_file():
            found.add(p)
            continue
        if not p.is_dir():
            raise NoImagesError(f"{p}: no such directory")
        found.update(
            f
            for f in p.rglob("*")
            if f.is_file()
            and f.suffix.lower() in IMAGE_EXTENSIONS
            and not is_hidden(f.relative_to(p))
        )
    return sorted(found)


def subject(path: Path) -> str:
    """The subject a file shows, for keeping one subject's images on one side of a split:
    ``<parent folder>/<stem without its last _token>`` when the stem has at least three
    ``_``-separated tokens (``london_012_03`` and ``london_012_08``: one person;
    ``pc_E14P01_y16x50`` and ``pc_E14P01_y537x49``: panels of one page), else
    ``<parent folder>/<stem>`` (``canada_003f``: one image, one subject)."""
    tokens = path.stem.split("_")
    stem = "_".join(tokens[:-1]) if len(tokens) >= 3 else path.stem
    return f"{path.parent.name}/{stem}"


def split_key(path: Path) -> float:
    """A number in [0, 1) from the file's subject (:func:`subject`), stable across
    machines and folder moves, and equal for every image of one subject."""
    digest = hashlib.sha1(subject(path).encode()).hexdigest()
    return int(digest[:8], 16) / 2**32


def split_files(files: Sequence[Path], val_fraction: float) -> tuple[list[Path], list[Path]]:
    """Deterministic train/val split: a file is in val when ``split_key < val_fraction``.

    The key hashes the file's subject (``<parent folder>/<name less its index>``), so the
    split does not depend on where the data lives nor on which other files are present,
    and one person's portraits (one page's panels) stay on one side.
    """
    train = [f for f in files if split_key(f) >= val_fraction]
    val = [f for f in files if split_key(f) < val_fraction]
    return train, val


def read_rgb(path: str | Path, max_side: int | None = None) -> Tensor:
    """Decode an image (EXIF orientation applied) to ``3xHxW`` uint8 RGB, as ``protect``
    reads it (:func:`fastprotect.imageio.load_image`; alpha dropped).

    Args:
        path: the file.
        max_side: shrink (never enlarge) so that the shorter side is at most this.
    """
    from ..imageio import _to_8bit_rgb

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "PA"):
            im = im.convert("RGB")
        # as `protect` reads it: 16-bit and float grey scaled to 8 bits, not clipped to white
        im = _to_8bit_rgb(im, [])
        if max_side is not None and min(im.size) > max_side:
            scale = max_side / min(im.size)
            im = im.resize(
                (max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                Image.Resampling.BICUBIC,
            )
        arr = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def read_all(files: Sequence[Path], max_side: int | None = None) -> tuple[list[Path], list[Tensor]]:
    """Read every file; skip unreadable ones with one warning listing them."""
    ok, images, bad = [], [], []
    for f in files:
        try:
            images.append(read_rgb(f, max_side))
            ok.append(f)
        except Exception as e:  # noqa: BLE001 - any decoder failure means "skip this file"
            bad.append(f"{f} ({type(e).__name__}: {e})")
    if bad:
        warnings.warn(
            f"skipped {len(bad)} unreadable image file(s): " + "; ".join(bad), stacklevel=2
        )
    return ok, images
